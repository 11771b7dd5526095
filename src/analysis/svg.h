// svg.h: a few lines of SVG drawing (rectangles, lines, polylines, text) and two charts
// built on them, enough for the analysis plots: grouped bar charts with a dashed
// reference line, and line charts of several series. Not a plotting library: no axes
// beyond simple ticks, no layout engine.
#pragma once
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace smoe {

// Escapes &, <, >, " and ' for XML/HTML text and attributes.
std::string xml_escape(const std::string& s);
// A distinct colour for series/expert i of n ("#rrggbb"): a fixed palette up to 10,
// evenly spaced hues beyond.
std::string series_colour(int64_t i, int64_t n);

class Svg {
 public:
  Svg(double width, double height);
  void rect(double x, double y, double w, double h, const std::string& fill, const std::string& title = "");
  void line(double x1, double y1, double x2, double y2, const std::string& stroke, double width = 1,
            bool dashed = false);
  void polyline(const std::vector<double>& xs, const std::vector<double>& ys, const std::string& stroke,
                double width = 1.5, bool dashed = false);
  void circle(double x, double y, double r, const std::string& fill, const std::string& title = "");
  // anchor: "start", "middle" or "end"; rotate: degrees about (x, y).
  void text(double x, double y, const std::string& s, double size = 11, const std::string& anchor = "start",
            bool bold = false, double rotate = 0);
  std::string str() const;  // the whole document

 private:
  double width_, height_;
  std::ostringstream body_;
};

// One panel of a chart: a title and, for each x position, one value per series.
struct BarPanel {
  std::string title;
  std::vector<std::vector<double>> values;  // [series][x]
};

struct ChartStyle {
  std::string title;                     // above everything
  std::vector<std::string> series;       // legend names
  std::vector<std::string> x_labels;     // one per x position
  std::string x_name, y_name;            // axis captions
  double reference = -1;                 // dashed horizontal line at this y (< 0: none)
  std::string reference_label;
  bool percent = true;                   // y ticks as percentages
  int64_t columns = 2;                   // panels per row
};

// Grouped bars: for each panel, at each x, one bar per series; y from 0 to a common max.
std::string bar_chart_svg(const std::vector<BarPanel>& panels, const ChartStyle& style);

// Lines: for each panel, one polyline per series over the x positions; `references`
// (one per panel, < 0 for none) draws a dashed line per panel instead of style.reference.
std::string line_chart_svg(const std::vector<BarPanel>& panels, const ChartStyle& style,
                           const std::vector<double>& references = {});

}  // namespace smoe
