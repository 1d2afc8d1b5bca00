// The progress line (see progress.h).
#include "attn/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace attn::cli {
namespace {

constexpr double kRedrawSeconds = 0.1;  // terminal: at most ~10 redraws a second
constexpr double kLogSeconds = 10.0;    // log: a line at least this often (and at every 10%)

// "m:ss", or "h:mm:ss" from an hour on.
std::string Duration(double seconds) {
  const int64_t s = static_cast<int64_t>(std::max(0.0, seconds) + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  }
  return buf;
}

// The terminal's width in columns (80 when it cannot be told).
int TerminalColumns(FILE* out) {
  winsize ws{};
  if (ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

}  // namespace

Progress::Progress(int64_t total, std::string label, FILE* out)
    : total_(total), label_(std::move(label)), out_(out), start_(Clock::now()) {
  const char* term = std::getenv("TERM");
  tty_ = isatty(fileno(out)) && !(term && std::strcmp(term, "dumb") == 0);
}

Progress::~Progress() {
  if (open_) std::fputc('\n', out_), std::fflush(out_);
}

std::string Progress::Line(bool bar) const {
  const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
  std::string s = label_;
  char buf[96];
  if (total_ > 0) {
    const double frac = std::clamp(static_cast<double>(done_) / static_cast<double>(total_), 0.0, 1.0);
    std::snprintf(buf, sizeof(buf), " %3d%%", static_cast<int>(frac * 100));
    s += buf;
    if (bar) {
      constexpr int kWidth = 24;
      const int full = static_cast<int>(frac * kWidth);
      s += " [" + std::string(full, '=') + (full < kWidth ? ">" : "") +
           std::string(std::max(0, kWidth - full - 1), ' ') + "]";
    }
    std::snprintf(buf, sizeof(buf), " %lld/%lld  %s", static_cast<long long>(done_),
                  static_cast<long long>(total_), Duration(elapsed).c_str());
    s += buf;
    if (done_ > 0 && done_ < total_) {
      s += " eta " + Duration(elapsed * static_cast<double>(total_ - done_) / static_cast<double>(done_));
    }
  } else {
    std::snprintf(buf, sizeof(buf), " %lld  %s", static_cast<long long>(done_), Duration(elapsed).c_str());
    s += buf;
  }
  if (!suffix_.empty()) s += "  " + suffix_;
  return s;
}

void Progress::Draw() {
  if (tty_) {
    std::string line = Line(true);
    // Longer than the terminal, \r would return only to the wrapped part: cut it instead.
    const size_t cols = static_cast<size_t>(std::max(10, TerminalColumns(out_) - 1));
    if (line.size() > cols) line.resize(cols);
    std::fprintf(out_, "\r%s\x1b[K", line.c_str());
    open_ = true;
  } else {
    std::fprintf(out_, "%s\n", Line(false).c_str());
  }
  std::fflush(out_);
  last_draw_ = Clock::now();
}

void Progress::Update(int64_t done, const std::string& suffix) {
  if (finished_) return;
  done_ = done;
  suffix_ = suffix;
  const double since = std::chrono::duration<double>(Clock::now() - last_draw_).count();
  if (tty_) {
    if (!open_ || since >= kRedrawSeconds) Draw();
    return;
  }
  // Logs: a line when a new tenth is reached, or after kLogSeconds without one.
  const int64_t decile = total_ > 0 ? std::min<int64_t>(10, done * 10 / total_) : 0;
  if (decile > last_decile_ || since >= kLogSeconds) {
    last_decile_ = std::max(last_decile_, decile);
    Draw();
  }
}

void Progress::Log(const std::string& line) {
  if (tty_ && open_) std::fputs("\r\x1b[K", out_);
  std::fprintf(out_, "%s\n", line.c_str());
  if (tty_ && open_ && !finished_) {
    Draw();
  } else {
    std::fflush(out_);
  }
}

void Progress::Finish(const std::string& suffix) {
  if (finished_) return;
  finished_ = true;
  if (!suffix.empty()) suffix_ = suffix;
  // Logs already have a line for the final state when the last Update reached the total.
  if (tty_ || !(total_ > 0 && last_decile_ == 10 && done_ >= total_ && suffix.empty())) {
    if (tty_) {
      Draw();
    } else {
      std::fprintf(out_, "%s\n", Line(false).c_str());
    }
  }
  if (open_) std::fputc('\n', out_), open_ = false;
  std::fflush(out_);
}

}  // namespace attn::cli
