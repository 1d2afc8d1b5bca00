// Line charts as PNG images: a small raster plotter with its own bitmap font (see plot.h).
#include "attn/plot.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "attn/error.h"

namespace attn::cli {
namespace {

// The font: printable ASCII (32..126) in a 5 x 9 cell designed for this file. Capitals and digits
// stand on rows 0-6, lowercase x-height is rows 2-6, descenders use rows 7-8. Bit (row * 5 + col)
// is ink. Drawn at kScale, so a character advances 12 px and capitals are 14 px tall.
constexpr uint64_t kFont[95] = {
    0x000000000000ull, 0x000100421084ull, 0x00000000294Aull, 0x000295F57D4Aull, 0x00011F4717C4ull,
    0x000632222263ull, 0x000593511526ull, 0x000000000884ull, 0x000208210888ull, 0x000088842082ull,
    0x000009575480ull, 0x0000084F9080ull, 0x044318000000ull, 0x0000000F8000ull, 0x00018C000000ull,
    0x000042222210ull, 0x0003A33AE62Eull, 0x0003884210C4ull, 0x0007C444422Eull, 0x0003A304111Full,
    0x000211F4A988ull, 0x0003A3083C3Full, 0x0003A317844Cull, 0x00008422221Full, 0x0003A317462Eull,
    0x0001910F462Eull, 0x00000C6018C0ull, 0x00110C6018C0ull, 0x000208208888ull, 0x000001F07C00ull,
    0x000088882082ull, 0x00010044422Eull, 0x000783DAF62Eull, 0x0004631FC62Eull, 0x0003E317C62Full,
    0x0003A210862Eull, 0x0001D318C527ull, 0x0007C217843Full, 0x00004217843Full, 0x0007A31E862Eull,
    0x0004631FC631ull, 0x00038842108Eull, 0x00019284211Cull, 0x000452519531ull, 0x0007C2108421ull,
    0x0004631AD771ull, 0x0004639ACE31ull, 0x0003A318C62Eull, 0x00004217C62Full, 0x00059358C62Eull,
    0x00045257C62Full, 0x0003E107043Eull, 0x00010842109Full, 0x0003A318C631ull, 0x00011518C631ull,
    0x0002AB5AC631ull, 0x000462A22A31ull, 0x000108422A31ull, 0x0007C222221Full, 0x00038421084Eull,
    0x000420820821ull, 0x00039084210Eull, 0x000000004544ull, 0x00F800000000ull, 0x000000002082ull,
    0x0007A3E83800ull, 0x0003E318BC21ull, 0x0003A210B800ull, 0x0007A318FA10ull, 0x000383F8B800ull,
    0x000084238A4Cull, 0x0E8C3D18F800ull, 0x00046319B421ull, 0x000388421804ull, 0x064A10843008ull,
    0x00024A32A421ull, 0x000388421086ull, 0x00056B5AAC00ull, 0x00046319B400ull, 0x0003A318B800ull,
    0x010BE318BC00ull, 0x1087A318F800ull, 0x00004219B400ull, 0x0003E0E0B800ull, 0x000324211C42ull,
    0x0005B318C400ull, 0x00011518C400ull, 0x0002AB58C400ull, 0x000454454400ull, 0x0E87A318C400ull,
    0x0007C4447C00ull, 0x000208411088ull, 0x000108421084ull, 0x000088441082ull, 0x0000008A8800ull,
};
constexpr int kScale = 2, kAdvance = 6 * kScale, kCapHeight = 7 * kScale;

struct Rgb {
  uint8_t r, g, b;
};
constexpr Rgb kInk{40, 40, 40}, kAxis{90, 90, 90}, kGrid{232, 232, 232}, kMarker{130, 130, 130};
// Ten distinct line colours (the "tab10" hues), grey last so it is rarely needed.
constexpr Rgb kPalette[10] = {{31, 119, 180},  {255, 127, 14}, {44, 160, 44},   {214, 39, 40},
                              {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {188, 189, 34},
                              {23, 190, 207},  {127, 127, 127}};

constexpr int kPanelW = 640, kPanelH = 420, kLineHalfWidth = 1;  // lines ~2.5 px wide (see Stroke)

int TextWidth(std::string_view s) { return s.empty() ? 0 : static_cast<int>(s.size()) * kAdvance - kScale; }

// Cuts `s` to at most max_px wide, ending in ".." when cut.
std::string Fit(std::string s, int max_px) {
  if (TextWidth(s) <= max_px) return s;
  while (!s.empty() && TextWidth(s + "..") > max_px) s.pop_back();
  return s + "..";
}

class Canvas {
 public:
  Canvas(int width, int height) : w_(width), h_(height), rgb_(static_cast<size_t>(width) * height * 3, 255) {}
  int width() const { return w_; }
  int height() const { return h_; }
  const uint8_t* data() const { return rgb_.data(); }

  // Mixes colour c into pixel (x, y) with opacity a in [0, 1]; outside the canvas does nothing.
  void Blend(int x, int y, Rgb c, double a) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_ || a <= 0) return;
    uint8_t* p = &rgb_[(static_cast<size_t>(y) * w_ + x) * 3];
    const double k = std::min(a, 1.0);
    p[0] = static_cast<uint8_t>(std::lround(p[0] + (c.r - p[0]) * k));
    p[1] = static_cast<uint8_t>(std::lround(p[1] + (c.g - p[1]) * k));
    p[2] = static_cast<uint8_t>(std::lround(p[2] + (c.b - p[2]) * k));
  }
  // Fills [x0, x1) x [y0, y1).
  void Fill(int x0, int y0, int x1, int y1, Rgb c) {
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) Blend(x, y, c, 1.0);
  }
  // Draws `s` with its capitals' top-left corner at (x, y). Vertical text reads bottom to top,
  // (x, y) then being the top-left of the rotated box's bottom end: glyph ink at text offset
  // (u right, v down) lands on (x + v, y - u).
  void Text(int x, int y, std::string_view s, Rgb c, bool vertical = false) {
    for (size_t i = 0; i < s.size(); ++i) {
      const unsigned ch = static_cast<unsigned char>(s[i]);
      const uint64_t bits = kFont[ch >= 32 && ch < 127 ? ch - 32 : '?' - 32];
      for (int row = 0; row < 9; ++row)
        for (int col = 0; col < 5; ++col) {
          if (!((bits >> (row * 5 + col)) & 1)) continue;
          for (int sy = 0; sy < kScale; ++sy)
            for (int sx = 0; sx < kScale; ++sx) {
              const int u = static_cast<int>(i) * kAdvance + col * kScale + sx, v = row * kScale + sy;
              if (vertical)
                Blend(x + v, y - u, c, 1.0);
              else
                Blend(x + u, y + v, c, 1.0);
            }
        }
    }
  }

 private:
  int w_, h_;
  std::vector<uint8_t> rgb_;
};

// An antialiased stroke of half-width hw from (x0, y0) to (x1, y1) into a coverage buffer of
// w x h (pixel centres at integers), keeping each pixel's largest coverage so that joints
// between segments are not drawn twice. Coverage falls from 1 to 0 over the pixel at the edge.
void Stroke(std::vector<float>& cov, int w, int h, double x0, double y0, double x1, double y1, double hw) {
  // Clip to the buffer plus a margin first (Liang-Barsky), so that a point far off the chart
  // (a fixed range, a diverging loss) cannot overflow the distance arithmetic below.
  if (!std::isfinite(x0) || !std::isfinite(y0) || !std::isfinite(x1) || !std::isfinite(y1)) return;
  const double m = hw + 2, box[4] = {-m, w - 1 + m, -m, h - 1 + m};
  double t0 = 0, t1 = 1;
  const double p[4] = {-(x1 - x0), x1 - x0, -(y1 - y0), y1 - y0};
  const double q[4] = {x0 - box[0], box[1] - x0, y0 - box[2], box[3] - y0};
  for (int i = 0; i < 4; ++i) {
    if (p[i] == 0) {
      if (q[i] < 0) return;  // parallel to this edge and outside it
    } else {
      const double t = q[i] / p[i];
      if (p[i] < 0)
        t0 = std::max(t0, t);
      else
        t1 = std::min(t1, t);
    }
  }
  if (t0 > t1) return;
  const double cx0 = x0 + t0 * (x1 - x0), cy0 = y0 + t0 * (y1 - y0);
  x1 = x0 + t1 * (x1 - x0), y1 = y0 + t1 * (y1 - y0), x0 = cx0, y0 = cy0;
  const double r = hw + 1, dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
  const int ya = static_cast<int>(std::max(0.0, std::floor(std::min(y0, y1) - r)));
  const int yb = static_cast<int>(std::min<double>(h - 1, std::ceil(std::max(y0, y1) + r)));
  for (int y = ya; y <= yb; ++y) {
    // Only the columns near the line at this row: its x over the band [y - r, y + r], widened by r.
    double lo = std::min(x0, x1) - r, hi = std::max(x0, x1) + r;
    if (std::fabs(dy) > 1e-9) {
      const double xa = x0 + (y - r - y0) * dx / dy, xb = x0 + (y + r - y0) * dx / dy;
      lo = std::max(lo, std::min(xa, xb) - r);
      hi = std::min(hi, std::max(xa, xb) + r);
    }
    // Clamped as doubles before the conversion: a nearly horizontal segment (tiny dy) puts xa, xb
    // far outside the int range, and converting such a double to int is undefined.
    const int xs = static_cast<int>(std::clamp(std::floor(lo), 0.0, static_cast<double>(w)));
    const int xe = static_cast<int>(std::clamp(std::ceil(hi), -1.0, static_cast<double>(w - 1)));
    for (int x = xs; x <= xe; ++x) {
      const double t = len2 > 0 ? std::clamp(((x - x0) * dx + (y - y0) * dy) / len2, 0.0, 1.0) : 0.0;
      const double ex = x0 + t * dx - x, ey = y0 + t * dy - y;
      const float c = static_cast<float>(std::clamp(hw + 0.5 - std::sqrt(ex * ex + ey * ey), 0.0, 1.0));
      float& dst = cov[static_cast<size_t>(y) * w + x];
      dst = std::max(dst, c);
    }
  }
}

// A round tick step near span / target: 1, 2 or 5 times a power of ten.
double NiceStep(double span, int target) {
  const double raw = span / target, p = std::pow(10.0, std::floor(std::log10(raw))), f = raw / p;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
}

// A tick label with as many decimals as the step needs; steps of thousands or millions as k / M.
std::string FormatTick(double v, double step) {
  const double unit = step >= 1e6 ? 1e6 : step >= 1e3 ? 1e3 : 1;
  const char* suffix = unit == 1e6 ? "M" : unit == 1e3 ? "k" : "";
  const double s = step / unit;
  const int decimals = s >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(s) - 1e-9));
  if (std::fabs(v) < step * 1e-6) v = 0;
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f%s", decimals, v / unit, v == 0 ? "" : suffix);
  return buf;
}

struct Axis {
  double lo = 0, hi = 1, step = 0.2;
  std::vector<double> ticks;
};

// Fits an axis to [lo, hi]; an end not fixed (auto_*) is widened to the next round tick.
Axis MakeAxis(double lo, double hi, bool auto_lo, bool auto_hi, int target) {
  if (!(hi > lo)) {  // one value, or a fixed end past the data: open a range around it
    const double pad = lo != 0 ? std::fabs(lo) * 0.1 : 1.0;
    if (auto_lo) lo -= pad;
    if (auto_hi) hi += pad;
    if (!(hi > lo)) hi = lo + pad;
  }
  Axis a;
  a.step = NiceStep(hi - lo, target);
  if (auto_lo) lo = std::floor(lo / a.step + 1e-9) * a.step;
  if (auto_hi) hi = std::ceil(hi / a.step - 1e-9) * a.step;
  a.lo = lo, a.hi = hi;
  for (double t = std::ceil(lo / a.step - 1e-9) * a.step; t <= hi + a.step * 1e-9; t += a.step)
    a.ticks.push_back(t);
  return a;
}

bool Finite(double x, double y) { return std::isfinite(x) && std::isfinite(y); }

void DrawPanel(Canvas& canvas, const Chart& chart, int px, int py) {
  // The axes' ranges: x fits the data exactly, y is widened to round ticks unless fixed.
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const Series& s : chart.series)
    for (size_t i = 0; i < s.x.size(); ++i)
      if (Finite(s.x[i], s.y[i])) {
        xmin = std::min(xmin, s.x[i]), xmax = std::max(xmax, s.x[i]);
        ymin = std::min(ymin, s.y[i]), ymax = std::max(ymax, s.y[i]);
      }
  if (!std::isfinite(xmin)) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  const bool auto_lo = std::isnan(chart.y_min), auto_hi = std::isnan(chart.y_max);
  const Axis ya = MakeAxis(auto_lo ? ymin : chart.y_min, auto_hi ? ymax : chart.y_max, auto_lo, auto_hi, 5);
  const Axis xa = MakeAxis(xmin, xmax, false, false, 6);

  // The legend flows in rows under the plot; the left margin fits the widest y tick label.
  std::vector<std::vector<size_t>> legend_rows;
  int row_w = 0;
  for (size_t i = 0; i < chart.series.size(); ++i) {
    if (chart.series[i].label.empty()) continue;
    const int w = 30 + TextWidth(Fit(chart.series[i].label, kPanelW - 80)) + 18;
    if (legend_rows.empty() || row_w + w > kPanelW - 40) legend_rows.emplace_back(), row_w = 0;
    legend_rows.back().push_back(i);
    row_w += w;
  }
  int label_w = 0;
  for (double t : ya.ticks) label_w = std::max(label_w, TextWidth(FormatTick(t, ya.step)));
  const int left = px + 12 + kCapHeight + 12 + label_w + 8, right = px + kPanelW - 24;
  const int top = py + 44;
  const int bottom =
      py + kPanelH - 8 - static_cast<int>(legend_rows.size()) * 22 - 12 - kCapHeight - 10 - kCapHeight - 10;
  const int w = right - left, h = bottom - top;
  auto X = [&](double x) { return left + (x - xa.lo) / (xa.hi - xa.lo) * (w - 1); };
  auto Y = [&](double y) { return top + (ya.hi - y) / (ya.hi - ya.lo) * (h - 1); };

  const std::string title = Fit(chart.title, kPanelW - 20);
  canvas.Text(px + (kPanelW - TextWidth(title)) / 2, py + 12, title, kInk);
  // Grid, ticks and their labels.
  for (double t : ya.ticks) {
    const int y = static_cast<int>(std::lround(Y(t)));
    canvas.Fill(left, y, right, y + 1, kGrid);
    canvas.Fill(left - 5, y, left, y + 1, kAxis);
    const std::string s = FormatTick(t, ya.step);
    canvas.Text(left - 8 - TextWidth(s), y - kCapHeight / 2, s, kInk);
  }
  for (double t : xa.ticks) {
    const int x = static_cast<int>(std::lround(X(t)));
    canvas.Fill(x, top, x + 1, bottom, kGrid);
    canvas.Fill(x, bottom, x + 1, bottom + 5, kAxis);
    const std::string s = FormatTick(t, xa.step);
    canvas.Text(x - TextWidth(s) / 2, bottom + 10, s, kInk);
  }
  const std::string xl = Fit(chart.x_label, w), yl = Fit(chart.y_label, h);
  canvas.Text(left + (w - TextWidth(xl)) / 2, bottom + 10 + kCapHeight + 10, xl, kInk);
  canvas.Text(px + 12, top + (h + TextWidth(yl)) / 2, yl, kInk, /*vertical=*/true);
  // Phase markers: dashed, 2 px.
  for (double v : chart.vlines) {
    if (!std::isfinite(v) || v < xa.lo || v > xa.hi) continue;
    const int x = static_cast<int>(std::lround(X(v)));
    for (int y = top; y < bottom; ++y)
      if ((y - top) % 10 < 6) canvas.Fill(x, y, x + 2, y + 1, kMarker);
  }
  // The lines, each through its own coverage buffer (clipped to the plot area), then the frame.
  std::vector<float> cov;
  for (size_t si = 0; si < chart.series.size(); ++si) {
    const Series& s = chart.series[si];
    cov.assign(static_cast<size_t>(w) * h, 0.0f);
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!Finite(s.x[i], s.y[i])) continue;
      const double x0 = X(s.x[i]) - left, y0 = Y(s.y[i]) - top;
      const bool next = i + 1 < s.x.size() && Finite(s.x[i + 1], s.y[i + 1]);
      const bool prev = i > 0 && Finite(s.x[i - 1], s.y[i - 1]);
      if (next) Stroke(cov, w, h, x0, y0, X(s.x[i + 1]) - left, Y(s.y[i + 1]) - top, kLineHalfWidth + 0.25);
      if (!next && !prev) Stroke(cov, w, h, x0, y0, x0, y0, 2.5);  // a lone point: a dot
    }
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        canvas.Blend(left + x, top + y, kPalette[si % 10], cov[static_cast<size_t>(y) * w + x]);
  }
  canvas.Fill(left - 1, top - 1, right + 1, top, kAxis);
  canvas.Fill(left - 1, bottom, right + 1, bottom + 1, kAxis);
  canvas.Fill(left - 1, top, left, bottom, kAxis);
  canvas.Fill(right, top, right + 1, bottom, kAxis);
  // The legend: a short line in the series' colour, then its label.
  int ly = bottom + 10 + kCapHeight + 10 + kCapHeight + 12;
  for (const std::vector<size_t>& row : legend_rows) {
    int lx = px + 20;
    for (size_t i : row) {
      const std::string label = Fit(chart.series[i].label, kPanelW - 80);
      canvas.Fill(lx, ly + kCapHeight / 2 - 1, lx + 24, ly + kCapHeight / 2 + 2, kPalette[i % 10]);
      canvas.Text(lx + 30, ly, label, kInk);
      lx += 30 + TextWidth(label) + 18;
    }
    ly += 22;
  }
}

}  // namespace

void WritePng(const std::vector<Chart>& panels, int columns, const std::string& path) {
  if (panels.empty()) throw Error("plot: no panels to draw into " + path);
  if (columns < 1) throw Error("plot: columns = " + std::to_string(columns) + " (must be >= 1)");
  for (const Chart& c : panels)
    for (const Series& s : c.series)
      if (s.x.size() != s.y.size()) {
        throw Error("plot: series '" + s.label + "' of chart '" + c.title + "' has " +
                    std::to_string(s.x.size()) + " x values but " + std::to_string(s.y.size()) + " y values");
      }
  const int n = static_cast<int>(panels.size()), cols = std::min(columns, n), rows = (n + cols - 1) / cols;
  Canvas canvas(cols * kPanelW, rows * kPanelH);
  for (int i = 0; i < n; ++i) DrawPanel(canvas, panels[i], (i % cols) * kPanelW, (i / cols) * kPanelH);

  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(canvas.width());
  image.height = static_cast<png_uint_32>(canvas.height());
  image.format = PNG_FORMAT_RGB;
  if (!png_image_write_to_file(&image, path.c_str(), 0, canvas.data(), 0, nullptr)) {
    throw Error("plot: cannot write " + path + ": " + image.message);
  }
}

void WritePlotDemo(const std::string& path) {
  auto chart = [](std::string title, std::string y_label) {
    Chart c;
    c.title = std::move(title), c.x_label = "step", c.y_label = std::move(y_label);
    return c;
  };
  Chart loss = chart("Loss", "loss (nats/byte)");
  Series train{"train", {}, {}}, val{"validation", {}, {}};
  for (int s = 0; s <= 5000; s += 10) {
    const double bump = 0.35 * std::exp(-std::pow((s - 1500) / 120.0, 2));  // a plateau's end
    train.x.push_back(s);
    train.y.push_back(1.45 + 4.1 * std::exp(-s / 350.0) + bump + 0.04 * std::sin(s * 0.37));
    if (s % 250 == 0)
      val.x.push_back(s), val.y.push_back(s == 2500 ? NAN : 1.55 + 4.0 * std::exp(-s / 350.0) + bump);
  }
  loss.series = {train, val};
  loss.vlines = {1500};
  Chart heads = chart("Head scores", "score");
  heads.y_min = 0, heads.y_max = 1;
  for (int k = 0; k < 8; ++k) {
    char name[16];  // (snprintf: GCC 12's -Wrestrict misfires on chained string + at -O3)
    std::snprintf(name, sizeof(name), "L%dH%d", k / 4, k % 4);
    Series s{name, {}, {}};
    for (int t = 0; t <= 5000; t += 25) {
      s.x.push_back(t);
      s.y.push_back(0.05 + 0.1 * k / 8 +
                    (k % 3 == 0 ? 0.8 : 0.3) / (1 + std::exp(-(t - 1200 - 150 * k) / 90.0)));
    }
    heads.series.push_back(s);
  }
  heads.vlines = {1500};
  Chart icl = chart("In-context learning score", "loss(late) - loss(early)");
  Series sc{"ICL score", {}, {}};
  for (int t = 0; t <= 5000; t += 50)
    sc.x.push_back(t),
        sc.y.push_back(t >= 3000 && t < 3300 ? NAN : -0.05 - 0.7 / (1 + std::exp(-(t - 1500) / 150.0)));
  icl.series = {sc};
  icl.vlines = {1500};
  WritePng({loss, heads, icl}, 2, path);
}

}  // namespace attn::cli
