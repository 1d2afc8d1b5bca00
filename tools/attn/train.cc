// `attn train`: trains a small decoder from scratch on a text corpus, recording the loss, the
// in-context-learning score and every head's induction and previous-token scores as it goes;
// `attn curves`: draws several runs' recorded curves side by side.
#include "attn/train.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "attn/commands.h"
#include "attn/error.h"
#include "attn/plot.h"
#include "attn/progress.h"
#include "core/cache_dir.h"
#include "train/corpus.h"
#include "train/metrics.h"

namespace attn::cli {
namespace {

namespace fs = std::filesystem;

// The induction score a head must reach to count as an induction head (as `attn heads` labels it).
constexpr double kInductionThreshold = 0.4;

struct TrainArgs {
  TrainModelConfig model;
  TrainOptions options;
  std::string corpus;                      // empty = the default corpus (scripts/fetch_corpus.sh)
  RepeatedSpans repeat;                    // fraction from --repeat-fraction, spans below
  std::vector<int64_t> repeat_span{8, 0};  // --repeat-span MIN MAX
  std::string out = "train-out";
  int64_t eval_every = 50;
  int64_t eval_batches = 4;
  int64_t save_every = 500;
  int64_t until = -1;  // stop at this step (checkpointed); -1 = options.steps
  bool resume = false;
  bool json = false;
};

std::string DefaultCorpusPath() { return CacheDirectory() + "/corpus/kjv.txt"; }

// The batch of step s depends only on (seed, s), so a resumed run sees the same batches.
uint64_t BatchSeed(uint64_t seed, int64_t step) {
  return seed * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(step) + 1) * 0xD1B54A32D192ED03ull;
}

struct Record {
  int64_t step = 0;
  double lr = 0, loss = NAN, val_loss = NAN, icl = NAN, grad_norm = NAN, tokens_per_s = NAN;
  std::vector<double> induction, previous_token;  // [layer * heads + head]
};

std::string CsvHeader(const TrainModelConfig& c) {
  std::string h = "step,tokens,lr,loss,val_loss,icl,grad_norm,tokens_per_s";
  for (const char* kind : {"induction", "prev"})
    for (int64_t l = 0; l < c.n_layers; ++l)
      for (int64_t hd = 0; hd < c.n_heads; ++hd)
        h.append(",")
            .append(kind)
            .append("_")
            .append(std::to_string(l))
            .append(".")
            .append(std::to_string(hd));
  return h;
}

std::string CsvRow(const Record& r, int64_t tokens_per_step) {
  auto num = [](double v) {
    if (std::isnan(v)) return std::string();
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return std::string(buf);
  };
  std::string row = std::to_string(r.step) + "," + std::to_string(r.step * tokens_per_step) + "," +
                    num(r.lr) + "," + num(r.loss) + "," + num(r.val_loss) + "," + num(r.icl) + "," +
                    num(r.grad_norm) + "," + num(r.tokens_per_s);
  for (double v : r.induction) row += "," + num(v);
  for (double v : r.previous_token) row += "," + num(v);
  return row;
}

// metrics.csv as columns: name -> values (NaN where a cell is empty).
struct Table {
  std::vector<std::string> names;
  std::vector<std::vector<double>> columns;
  const std::vector<double>* Find(const std::string& name) const {
    for (size_t i = 0; i < names.size(); ++i)
      if (names[i] == name) return &columns[i];
    return nullptr;
  }
};

Table ReadCsv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read '" + path + "'");
  Table t;
  std::string line;
  if (std::getline(in, line) && !line.empty() && line.back() == '\r') line.pop_back();
  if (!in || line.rfind("step,", 0) != 0)
    throw Error("'" + path + "' is not a metrics.csv written by attn train (its header is missing)");
  std::stringstream header(line);
  for (std::string cell; std::getline(header, cell, ',');) t.names.push_back(cell);
  t.columns.resize(t.names.size());
  int64_t line_no = 1;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();  // a CSV written with CRLF
    if (line.empty()) continue;
    std::vector<double> row;
    size_t start = 0;
    while (true) {
      const size_t comma = line.find(',', start);
      const std::string cell =
          line.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (cell.empty()) {
        row.push_back(NAN);
      } else {
        char* end = nullptr;
        const double v = std::strtod(cell.c_str(), &end);
        if (end == cell.c_str() || *end != '\0')
          throw Error("'" + path + "' line " + std::to_string(line_no) + ": '" + cell + "' is not a number");
        row.push_back(v);
      }
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    if (row.size() != t.names.size()) {
      throw Error("'" + path + "' line " + std::to_string(line_no) + " has " + std::to_string(row.size()) +
                  " cells, the header " + std::to_string(t.names.size()));
    }
    for (size_t i = 0; i < row.size(); ++i) t.columns[i].push_back(row[i]);
  }
  return t;
}

Chart StepChart(const std::string& title, const std::string& y_label) {
  Chart c;
  c.title = title;
  c.x_label = "step";
  c.y_label = y_label;
  return c;
}

Series Named(const std::string& label) {
  Series s;
  s.label = label;
  return s;
}

// Fixes a loss chart's top at the highest loss after the first tenth of the steps, so that the
// first steps' drop from ln 256 = 5.5 does not flatten the part where runs and phases differ.
void ZoomPastStart(Chart& chart) {
  double last_x = 0.0, top = -INFINITY;
  for (const Series& s : chart.series)
    for (double x : s.x) last_x = std::max(last_x, x);
  for (const Series& s : chart.series)
    for (size_t i = 0; i < s.x.size(); ++i)
      if (s.x[i] >= 0.1 * last_x && std::isfinite(s.y[i])) top = std::max(top, s.y[i]);
  if (std::isfinite(top)) chart.y_max = top;
}

// The first recorded step at which any head's induction score reaches the threshold, or -1.
int64_t PhaseChangeStep(const std::vector<Record>& records) {
  for (const Record& r : records)
    for (double v : r.induction)
      if (v >= kInductionThreshold) return r.step;
  return -1;
}

void WriteCurves(const TrainModelConfig& c, const std::vector<Record>& records, const std::string& path) {
  Chart loss = StepChart("loss (nats/byte)", "loss");
  Chart icl = StepChart("in-context learning: late minus early loss", "nats");
  Chart induction = StepChart("induction score per head", "attention");
  Chart previous = StepChart("previous-token score per head", "attention");
  Series train = Named("train"), val = Named("validation"), icl_s = Named("ICL score");
  const size_t n_heads = static_cast<size_t>(c.n_layers * c.n_heads);
  std::vector<Series> ind(n_heads), prev(n_heads);
  for (size_t i = 0; i < n_heads; ++i) {
    const std::string name = std::to_string(i / static_cast<size_t>(c.n_heads)) + "." +
                             std::to_string(i % static_cast<size_t>(c.n_heads));
    ind[i].label = prev[i].label = name;
  }
  for (const Record& r : records) {
    const double x = static_cast<double>(r.step);
    train.x.push_back(x), train.y.push_back(r.loss);
    val.x.push_back(x), val.y.push_back(r.val_loss);
    icl_s.x.push_back(x), icl_s.y.push_back(r.icl);
    for (size_t i = 0; i < n_heads; ++i) {
      ind[i].x.push_back(x), ind[i].y.push_back(r.induction[i]);
      prev[i].x.push_back(x), prev[i].y.push_back(r.previous_token[i]);
    }
  }
  loss.series = {train, val};
  ZoomPastStart(loss);
  icl.series = {icl_s};
  induction.series = ind;
  previous.series = prev;
  induction.y_min = previous.y_min = 0.0;
  induction.y_max = previous.y_max = 1.0;
  if (const int64_t phase = PhaseChangeStep(records); phase >= 0) {
    for (Chart* ch : {&loss, &icl, &induction, &previous}) ch->vlines.push_back(static_cast<double>(phase));
  }
  WritePng({loss, icl, induction, previous}, 2, path);
}

void RunTrain(const TrainArgs& args) {
  const std::string corpus_path = args.corpus.empty() ? DefaultCorpusPath() : args.corpus;
  if (args.corpus.empty() && !fs::exists(corpus_path)) {
    throw Error("no corpus at " + corpus_path +
                ": run scripts/fetch_corpus.sh (the King James Bible from Debian) or pass --corpus FILE");
  }
  if (args.eval_every < 1) throw Error("--eval-every " + std::to_string(args.eval_every) + " must be >= 1");
  if (args.eval_batches < 1)
    throw Error("--eval-batches " + std::to_string(args.eval_batches) + " must be >= 1");
  if (args.save_every < 1) throw Error("--save-every " + std::to_string(args.save_every) + " must be >= 1");
  const TrainModelConfig& c = args.model;
  const Corpus corpus(corpus_path, c.context);
  RepeatedSpans repeat = args.repeat;
  repeat.min_span = args.repeat_span.at(0);
  repeat.max_span = args.repeat_span.at(1);
  repeat.max_span = repeat.MaxSpan(c.context);
  if (!(repeat.fraction >= 0.0 && repeat.fraction <= 1.0)) {
    char value[32];
    std::snprintf(value, sizeof value, "%g", repeat.fraction);
    throw Error(std::string("--repeat-fraction ") + value + " must be in [0, 1]");
  }
  if (repeat.fraction > 0.0 &&
      (repeat.min_span < 1 || repeat.max_span < repeat.min_span || repeat.max_span > c.context)) {
    throw Error("--repeat-span " + std::to_string(repeat.min_span) + " " + std::to_string(repeat.max_span) +
                ": needs 1 <= MIN <= MAX <= --context (" + std::to_string(c.context) + ")");
  }
  if (c.vocab_size != 256) throw Error("--vocab: byte-level training needs a vocabulary of 256");
  Trainer trainer(c, args.options);

  fs::create_directories(args.out);
  const std::string ckpt = (fs::path(args.out) / "model.gguf").string();
  const std::string csv_path = (fs::path(args.out) / "metrics.csv").string();
  const std::string png_path = (fs::path(args.out) / "curves.png").string();

  // What the batches are drawn from, kept beside the checkpoint: a resumed run must draw the same.
  // Without repeated rows the span lengths are never drawn, so they are recorded as 0.
  const std::string data_path = (fs::path(args.out) / "data.json").string();
  const bool repeats = repeat.fraction > 0.0;
  const nlohmann::json data = {{"corpus_bytes", corpus.size()},
                               {"repeat_fraction", repeat.fraction},
                               {"repeat_min_span", repeats ? repeat.min_span : 0},
                               {"repeat_max_span", repeats ? repeat.max_span : 0}};
  std::vector<Record> records;
  if (args.resume) {
    if (!fs::exists(ckpt)) throw Error("--resume: no checkpoint at " + ckpt);
    if (fs::exists(data_path)) {
      nlohmann::json saved;
      try {
        std::ifstream(data_path) >> saved;
      } catch (const nlohmann::json::exception& e) {
        throw Error("--resume: " + data_path + " is not valid JSON (" + e.what() + ")");
      }
      for (const auto& [key, value] : data.items()) {
        if (!saved.contains(key) || saved[key] != value) {
          throw Error("--resume: the run in " + args.out + " drew its batches with " + key + " = " +
                      (saved.contains(key) ? saved[key].dump() : std::string("(missing)")) +
                      ", this one with " + value.dump() + " (pass the run's corpus and --repeat-* flags)");
        }
      }
    }
    LoadCheckpoint(trainer, ckpt);
    trainer.mutable_options().steps = args.options.steps;
    // Keep the recorded rows up to the checkpoint's step.
    if (fs::exists(csv_path)) {
      const Table t = ReadCsv(csv_path);
      const size_t lh = static_cast<size_t>(c.n_layers * c.n_heads);
      if (t.names.size() != 8 + 2 * lh) throw Error(csv_path + " does not match the model's head count");
      for (size_t row = 0; row < t.columns[0].size(); ++row) {
        Record r;
        r.step = static_cast<int64_t>(t.columns[0][row]);
        if (r.step > trainer.step()) break;
        r.lr = t.columns[2][row], r.loss = t.columns[3][row], r.val_loss = t.columns[4][row];
        r.icl = t.columns[5][row], r.grad_norm = t.columns[6][row], r.tokens_per_s = t.columns[7][row];
        for (size_t i = 0; i < lh; ++i) r.induction.push_back(t.columns[8 + i][row]);
        for (size_t i = 0; i < lh; ++i) r.previous_token.push_back(t.columns[8 + lh + i][row]);
        records.push_back(std::move(r));
      }
    }
  }

  const InductionProbe probe =
      MakeInductionProbe(corpus.OccurringBytes(std::max<int64_t>(1, corpus.train_size() / 10000)), c.context,
                         /*count=*/4, args.options.seed);
  const int64_t B = args.options.batch, T = c.context, steps = args.options.steps;
  std::vector<int32_t> batch(static_cast<size_t>(B * (T + 1)));
  std::vector<float> losses(static_cast<size_t>(B * T));

  auto evaluate = [&](Record& r) {
    std::vector<float> all(static_cast<size_t>(args.eval_batches * B * T));
    double sum = 0.0;
    for (int64_t i = 0; i < args.eval_batches; ++i) {
      corpus.FixedBatch(/*validation=*/true, B, T, i, batch.data(), repeat);
      sum += trainer.Losses(batch, B, all.data() + i * B * T);
    }
    r.val_loss = sum / static_cast<double>(args.eval_batches);
    r.icl = InContextLearningScore(all, args.eval_batches * B, T);
    const TrainHeadScores s = ScoreTrainerHeads(trainer, probe);
    r.induction = s.induction;
    r.previous_token = s.previous_token;
  };
  if (!args.resume) {
    std::ofstream out(data_path);
    out << data.dump(1) << "\n";
    if (!out) throw Error("cannot write " + data_path);
  }
  auto save = [&] {
    SaveCheckpoint(trainer, ckpt);
    std::ofstream out(csv_path + ".tmp");
    out << CsvHeader(c) << "\n";
    for (const Record& r : records) out << CsvRow(r, B * T) << "\n";
    out.close();
    if (!out) throw Error("cannot write " + csv_path);
    fs::rename(csv_path + ".tmp", csv_path);
  };
  int64_t last_good = args.resume ? trainer.step() : -1;  // step of the last checkpoint on disk

  if (records.empty()) {
    Record r;
    r.step = trainer.step();
    r.lr = trainer.LearningRate(trainer.step());
    evaluate(r);
    records.push_back(r);
  }
  if (last_good < 0) {
    // The initial state is the first good checkpoint a diverging run falls back to.
    save();
    last_good = trainer.step();
  }
  Progress progress(steps, "train");
  char suffix[160] = "";
  double loss_sum = 0.0, train_seconds = 0.0;
  int64_t loss_count = 0, timed_tokens = 0;
  double last_grad_norm = NAN;
  const int64_t stop = args.until >= 0 ? std::min(args.until, steps) : steps;
  while (trainer.step() < stop) {
    const int64_t s = trainer.step();
    uint64_t rng = BatchSeed(args.options.seed, s);
    corpus.SampleBatch(/*validation=*/false, B, T, rng, batch.data(), repeat);
    const auto t0 = std::chrono::steady_clock::now();
    const float loss = trainer.ForwardBackward(batch, B);
    auto fail = [&](const std::string& what) {
      progress.Finish();
      throw Error("train: " + what + " at step " + std::to_string(s) +
                  (last_good >= 0
                       ? "; the last good checkpoint is " + ckpt + " (step " + std::to_string(last_good) + ")"
                       : std::string("; no checkpoint was written")) +
                  ". Try a lower --lr or a stronger --clip");
    };
    if (!std::isfinite(loss)) fail("the loss is not finite (" + std::to_string(loss) + ")");
    try {
      last_grad_norm = trainer.Update();
    } catch (const Error& e) {
      fail(e.what());
    }
    train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    timed_tokens += B * T;
    loss_sum += loss, ++loss_count;
    const int64_t done = trainer.step();
    if (done % args.eval_every == 0 || done == stop) {
      Record r;
      r.step = done;
      r.lr = trainer.LearningRate(s);
      r.loss = loss_sum / static_cast<double>(loss_count);
      r.grad_norm = last_grad_norm;
      r.tokens_per_s = static_cast<double>(timed_tokens) / train_seconds;
      evaluate(r);
      records.push_back(r);
      loss_sum = 0.0, loss_count = 0;
      std::snprintf(suffix, sizeof suffix, "loss %.3f  val %.3f  icl %+.3f  induction %.2f  %.1fk tok/s",
                    r.loss, r.val_loss, r.icl, *std::max_element(r.induction.begin(), r.induction.end()),
                    r.tokens_per_s / 1e3);
    }
    progress.Update(done, suffix);
    if (done % args.save_every == 0 || done == stop) {
      save();
      last_good = done;
    }
  }
  progress.Finish();
  if (last_good < trainer.step()) save();
  WriteCurves(c, records, png_path);

  const Record& last = records.back();
  const int64_t phase = PhaseChangeStep(records);
  std::vector<double> max_induction(static_cast<size_t>(c.n_layers), 0.0);
  for (int64_t l = 0; l < c.n_layers; ++l)
    for (int64_t h = 0; h < c.n_heads; ++h)
      max_induction[l] = std::max(max_induction[l], last.induction[static_cast<size_t>(l * c.n_heads + h)]);
  const double tokens_per_s = train_seconds > 0 ? static_cast<double>(timed_tokens) / train_seconds : 0.0;
  if (args.json) {
    nlohmann::json j;
    j["steps"] = trainer.step();
    j["loss"] = last.loss;
    j["val_loss"] = last.val_loss;
    j["icl"] = last.icl;
    j["max_induction_per_layer"] = max_induction;
    j["phase_change_step"] = phase;
    j["tokens_per_s"] = tokens_per_s;
    j["checkpoint"] = ckpt;
    j["metrics"] = csv_path;
    j["curves"] = png_path;
    std::printf("%s\n", j.dump(1).c_str());
    return;
  }
  std::printf("trained %lld steps of %lld tokens: loss %.3f, validation %.3f, ICL score %+.3f\n",
              static_cast<long long>(trainer.step()), static_cast<long long>(B * T), last.loss, last.val_loss,
              last.icl);
  std::printf("strongest induction score per layer:");
  for (int64_t l = 0; l < c.n_layers; ++l)
    std::printf(" %lld: %.2f", static_cast<long long>(l), max_induction[l]);
  std::printf("\n");
  if (phase >= 0)
    std::printf("induction heads (score >= %.1f) from step %lld\n", kInductionThreshold,
                static_cast<long long>(phase));
  else
    std::printf("no induction head (score >= %.1f) formed\n", kInductionThreshold);
  std::printf("%.1fk tokens/s; checkpoint %s, metrics %s, curves %s\n", tokens_per_s / 1e3, ckpt.c_str(),
              csv_path.c_str(), png_path.c_str());
}

struct CurvesArgs {
  std::vector<std::string> runs;
  std::vector<std::string> labels;
  std::string out = "curves.png";
};

// Several runs side by side: validation loss, ICL score, and the strongest induction and
// previous-token score of any head, per run.
void RunCurves(const CurvesArgs& args) {
  if (!args.labels.empty() && args.labels.size() != args.runs.size()) {
    throw Error("--labels has " + std::to_string(args.labels.size()) + " names for " +
                std::to_string(args.runs.size()) + " runs");
  }
  Chart loss = StepChart("validation loss (nats/byte)", "loss");
  Chart icl = StepChart("in-context learning: late minus early loss", "nats");
  Chart induction = StepChart("strongest induction score of any head", "attention");
  Chart previous = StepChart("strongest previous-token score of any head", "attention");
  induction.y_min = previous.y_min = 0.0;
  induction.y_max = previous.y_max = 1.0;
  for (size_t i = 0; i < args.runs.size(); ++i) {
    const fs::path dir(args.runs[i]);
    const std::string csv = fs::is_directory(dir) ? (dir / "metrics.csv").string() : dir.string();
    const Table t = ReadCsv(csv);
    const std::string label = args.labels.empty() ? dir.filename().string() : args.labels[i];
    const std::vector<double>* step = t.Find("step");
    const std::vector<double>* val = t.Find("val_loss");
    const std::vector<double>* icl_col = t.Find("icl");
    if (step == nullptr || val == nullptr || icl_col == nullptr)
      throw Error(csv + " lacks step/val_loss/icl");
    Series ind{label, *step, std::vector<double>(step->size(), 0.0)};
    Series prev{label, *step, std::vector<double>(step->size(), 0.0)};
    for (size_t col = 0; col < t.names.size(); ++col) {
      const bool is_ind = t.names[col].rfind("induction_", 0) == 0,
                 is_prev = t.names[col].rfind("prev_", 0) == 0;
      for (size_t row = 0; row < step->size(); ++row) {
        if (is_ind) ind.y[row] = std::max(ind.y[row], t.columns[col][row]);
        if (is_prev) prev.y[row] = std::max(prev.y[row], t.columns[col][row]);
      }
    }
    for (size_t row = 0; row < step->size(); ++row) {
      if (ind.y[row] >= kInductionThreshold) {
        for (Chart* ch : {&loss, &icl, &induction, &previous}) ch->vlines.push_back((*step)[row]);
        break;
      }
    }
    loss.series.push_back({label, *step, *val});
    icl.series.push_back({label, *step, *icl_col});
    induction.series.push_back(ind);
    previous.series.push_back(prev);
  }
  ZoomPastStart(loss);
  WritePng({loss, icl, induction, previous}, 2, args.out);
  std::printf("%s\n", args.out.c_str());
}

}  // namespace

void AddTrainCommand(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train a small decoder from scratch on a text corpus (byte-level), recording loss and head scores");
  TrainModelConfig& m = args->model;
  TrainOptions& o = args->options;
  cmd->add_option("--corpus", args->corpus,
                  "Text file to train on (default: the King James Bible, fetched by "
                  "scripts/fetch_corpus.sh)");
  cmd->add_option("--repeat-fraction", args->repeat.fraction,
                  "Share of the rows (training and validation) that are a span of the text repeated to fill "
                  "the row, so that copying from context pays (0: plain text)")
      ->capture_default_str();
  cmd->add_option("--repeat-span", args->repeat_span,
                  "Shortest and longest repeated span in bytes (0 = context / 2)")
      ->expected(2)
      ->capture_default_str();
  cmd->add_option("--out", args->out, "Directory for model.gguf, metrics.csv and curves.png")
      ->capture_default_str();
  cmd->add_option("--layers", m.n_layers, "Transformer blocks")->capture_default_str();
  cmd->add_option("--d-model", m.d_model, "Residual stream width")->capture_default_str();
  cmd->add_option("--heads", m.n_heads, "Attention heads per layer")->capture_default_str();
  cmd->add_option("--d-ff", m.d_ff, "MLP width (0: attention-only)")->capture_default_str();
  cmd->add_flag("--sinks", m.attn_sinks,
                "Learned attention sinks (gpt-oss's): one more trained logit per head, with no value, so a "
                "head can attend to nothing");
  cmd->add_option("--context", m.context, "Tokens per training sequence")->capture_default_str();
  cmd->add_option("--batch", o.batch, "Sequences per step")->capture_default_str();
  cmd->add_option("--steps", o.steps, "Optimizer steps")->capture_default_str();
  cmd->add_option("--lr", o.lr, "Peak learning rate (AdamW)")->capture_default_str();
  cmd->add_option("--warmup", o.warmup, "Linear warmup steps before the cosine decay")->capture_default_str();
  cmd->add_option("--weight-decay", o.weight_decay, "Decoupled weight decay of the matrices")
      ->capture_default_str();
  cmd->add_option("--clip", o.clip, "Clip the global gradient norm to this (0: off)")->capture_default_str();
  cmd->add_option("--seed", o.seed, "Seed of the initialization, batches and probe")->capture_default_str();
  cmd->add_option("--threads", o.threads, "Threads (0: all cores)")->capture_default_str();
  cmd->add_option("--eval-every", args->eval_every, "Record the metrics every N steps")
      ->capture_default_str();
  cmd->add_option("--eval-batches", args->eval_batches, "Validation batches per record")
      ->capture_default_str();
  cmd->add_option("--save-every", args->save_every, "Save the checkpoint every N steps")
      ->capture_default_str();
  cmd->add_option("--until", args->until,
                  "Stop at this step, checkpointed, to continue later with --resume (the schedule still "
                  "spans --steps)");
  cmd->add_flag("--resume", args->resume, "Continue from OUT/model.gguf (same model settings)");
  cmd->add_flag("--json", args->json, "Print a JSON summary at the end");
  cmd->callback([args] { RunTrain(*args); });

  auto curves = std::make_shared<CurvesArgs>();
  CLI::App* cc =
      app.add_subcommand("curves", "Draw the recorded curves of several `attn train` runs side by side");
  cc->add_option("runs", curves->runs, "Run directories (or metrics.csv files)")->required();
  cc->add_option("--labels", curves->labels, "A name per run (default: the directory names)");
  cc->add_option("--out", curves->out, "PNG to write")->capture_default_str();
  cc->callback([curves] { RunCurves(*curves); });
}

}  // namespace attn::cli
