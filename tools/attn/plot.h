// Line charts as PNG images (libpng): the training curves of `attn train`.
//
// Each chart is one panel with a title, axes with round-numbered ticks, a light grid, a legend
// under the plot, and one antialiased line per series; panels are laid out in a grid.
#pragma once

#include <cmath>
#include <string>
#include <vector>

namespace attn::cli {

struct Series {
  std::string label;
  std::vector<double> x, y;  // same length; a NaN or infinite y (or x) leaves a gap in the line
};

struct Chart {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  // The y range: NaN (the default) fits that end to the data (widened to a round tick); a
  // number fixes it, e.g. y_min = 0, y_max = 1 for scores. Points outside are clipped.
  double y_min = NAN, y_max = NAN;
  // Dashed vertical marker lines at these x values (e.g. where a phase change happened).
  std::vector<double> vlines;
};

// Writes `panels` as one PNG, `columns` panels per row (the last row may be short). Throws
// attn::Error when there are no panels, columns < 1, a series' x and y differ in length, or the
// file cannot be written.
void WritePng(const std::vector<Chart>& panels, int columns, const std::string& path);

// Writes a 3-panel sample (a loss curve with a bump and a phase marker, 8 head scores in [0, 1],
// a negative-valued in-context-learning score with a gap): a visual check of the plotter.
void WritePlotDemo(const std::string& path);

}  // namespace attn::cli
