// A one-line progress report on stderr for long work (training, evaluation sweeps).
//
// On a terminal the line is redrawn in place (\r) at most ~10 times a second:
//   train  42% [=========>            ] 4200/10000  01:23 eta 01:55  loss 2.31  41.2k tok/s
// Anywhere else (a log file, a pipe) it prints a plain line at every 10% and at least every
// 10 seconds, so logs stay readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace attn::cli {

class Progress {
 public:
  // total <= 0: the total is unknown (no percentage, bar or ETA). `out` is where it is drawn.
  Progress(int64_t total, std::string label, FILE* out = stderr);
  ~Progress();  // ends a line left open on the terminal
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `done` units finished so far; `suffix` (e.g. "loss 2.31  41.2k tok/s") ends the line.
  void Update(int64_t done, const std::string& suffix = "");
  // Prints a message of its own (e.g. an evaluation result) without garbling the bar.
  void Log(const std::string& line);
  // Draws the final state and ends the line; later calls do nothing.
  void Finish(const std::string& suffix = "");

  bool is_tty() const { return tty_; }

 private:
  using Clock = std::chrono::steady_clock;
  std::string Line(bool bar) const;
  void Draw();

  int64_t total_, done_ = 0;
  std::string label_, suffix_;
  FILE* out_;
  bool tty_, open_ = false, finished_ = false;
  Clock::time_point start_, last_draw_;
  int64_t last_decile_ = 0;
};

}  // namespace attn::cli
