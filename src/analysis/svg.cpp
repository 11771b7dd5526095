// svg.cpp: minimal SVG output and the bar and line charts of the analysis tools.
#include "analysis/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

namespace smoe {

std::string xml_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string series_colour(int64_t i, int64_t n) {
  static const char* kPalette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                   "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
  if (n <= 10) return kPalette[i % 10];
  // Evenly spaced hues at fixed saturation and lightness (HSL 65%, 55%).
  const double h = 360.0 * static_cast<double>(i) / static_cast<double>(n), s = 0.65, l = 0.55;
  const double c = (1 - std::fabs(2 * l - 1)) * s, hp = h / 60.0;
  const double x = c * (1 - std::fabs(std::fmod(hp, 2.0) - 1));
  double r = 0, g = 0, b = 0;
  if (hp < 1) r = c, g = x;
  else if (hp < 2) r = x, g = c;
  else if (hp < 3) g = c, b = x;
  else if (hp < 4) g = x, b = c;
  else if (hp < 5) r = x, b = c;
  else r = c, b = x;
  const double m = l - c / 2;
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", static_cast<int>(std::lround((r + m) * 255)),
                static_cast<int>(std::lround((g + m) * 255)), static_cast<int>(std::lround((b + m) * 255)));
  return buf;
}

namespace {
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}
}  // namespace

Svg::Svg(double width, double height) : width_(width), height_(height) {}

void Svg::rect(double x, double y, double w, double h, const std::string& fill, const std::string& title) {
  body_ << "<rect x=\"" << num(x) << "\" y=\"" << num(y) << "\" width=\"" << num(w) << "\" height=\"" << num(h)
        << "\" fill=\"" << fill << "\"";
  if (title.empty()) body_ << "/>\n";
  else body_ << "><title>" << xml_escape(title) << "</title></rect>\n";
}

void Svg::line(double x1, double y1, double x2, double y2, const std::string& stroke, double width, bool dashed) {
  body_ << "<line x1=\"" << num(x1) << "\" y1=\"" << num(y1) << "\" x2=\"" << num(x2) << "\" y2=\"" << num(y2)
        << "\" stroke=\"" << stroke << "\" stroke-width=\"" << width << "\""
        << (dashed ? " stroke-dasharray=\"5,4\"" : "") << "/>\n";
}

void Svg::polyline(const std::vector<double>& xs, const std::vector<double>& ys, const std::string& stroke,
                   double width, bool dashed) {
  body_ << "<polyline fill=\"none\" stroke=\"" << stroke << "\" stroke-width=\"" << width << "\""
        << (dashed ? " stroke-dasharray=\"5,4\"" : "") << " points=\"";
  for (size_t i = 0; i < xs.size() && i < ys.size(); ++i) body_ << (i ? " " : "") << num(xs[i]) << "," << num(ys[i]);
  body_ << "\"/>\n";
}

void Svg::circle(double x, double y, double r, const std::string& fill, const std::string& title) {
  body_ << "<circle cx=\"" << num(x) << "\" cy=\"" << num(y) << "\" r=\"" << num(r) << "\" fill=\"" << fill << "\"";
  if (title.empty()) body_ << "/>\n";
  else body_ << "><title>" << xml_escape(title) << "</title></circle>\n";
}

void Svg::text(double x, double y, const std::string& s, double size, const std::string& anchor, bool bold,
               double rotate) {
  body_ << "<text x=\"" << num(x) << "\" y=\"" << num(y) << "\" font-size=\"" << size << "\" text-anchor=\""
        << anchor << "\"" << (bold ? " font-weight=\"bold\"" : "");
  if (rotate != 0) body_ << " transform=\"rotate(" << rotate << " " << num(x) << " " << num(y) << ")\"";
  body_ << ">" << xml_escape(s) << "</text>\n";
}

std::string Svg::str() const {
  std::ostringstream out;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(width_) << "\" height=\"" << num(height_)
      << "\" viewBox=\"0 0 " << num(width_) << " " << num(height_) << "\" font-family=\"sans-serif\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << body_.str() << "</svg>\n";
  return out.str();
}

namespace {

// The frame shared by both charts: title, legend, panels in a grid with y ticks.
struct Frame {
  double panel_w = 0, panel_h = 190, left = 52, right = 12, top = 24, bottom = 38, header = 0;
  int64_t columns = 1, rows = 1;
  double y_max = 1;
  double x0(int64_t p) const { return static_cast<double>(p % columns) * (panel_w + left + right) + left; }
  double y0(int64_t p) const { return header + static_cast<double>(p / columns) * (panel_h + top + bottom) + top; }
  double width() const { return static_cast<double>(columns) * (panel_w + left + right); }
  double height() const { return header + static_cast<double>(rows) * (panel_h + top + bottom); }
  double y_at(int64_t p, double v) const { return y0(p) + panel_h * (1 - std::min(v, y_max) / y_max); }
};

std::string tick_label(double v, bool percent) {
  char buf[32];
  if (percent) std::snprintf(buf, sizeof buf, "%.0f%%", 100 * v);
  else std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

// Draws the legend (when svg is given): entries left to right from (10, 32), wrapping at
// `width` (about 6.5 px a character). Returns its height.
double legend(Svg* svg, const std::vector<std::string>& series, double width) {
  double lx = 10, ly = 32;
  for (size_t s = 0; s < series.size(); ++s) {
    const double w = 16 + 6.5 * static_cast<double>(series[s].size()) + 18;
    if (lx > 10 && lx + w > width) {
      lx = 10;
      ly += 18;
    }
    if (svg) {
      svg->rect(lx, ly, 12, 10, series_colour(static_cast<int64_t>(s), static_cast<int64_t>(series.size())));
      svg->text(lx + 16, ly + 9, series[s], 11);
    }
    lx += w;
  }
  return ly - 32 + 18;
}

Frame make_frame(const std::vector<BarPanel>& panels, const ChartStyle& style, double panel_w,
                 const std::vector<double>& references, Svg*& svg_out, std::unique_ptr<Svg>& holder) {
  Frame f;
  f.panel_w = panel_w;
  f.columns = std::max<int64_t>(1, std::min<int64_t>(style.columns, static_cast<int64_t>(panels.size())));
  f.rows = (static_cast<int64_t>(panels.size()) + f.columns - 1) / f.columns;
  f.header = 34 + legend(nullptr, style.series, f.width());
  double mx = std::max(style.reference, 0.0);
  for (double r : references) mx = std::max(mx, r);
  for (const BarPanel& p : panels)
    for (const auto& s : p.values)
      for (double v : s) mx = std::max(mx, v);
  if (mx <= 0) mx = 1;
  // Round the top up to a multiple of a "nice" step.
  const double raw = mx * 1.08 / 4, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  f.y_max = 4 * step;
  holder = std::make_unique<Svg>(f.width(), f.height());
  Svg& svg = *holder;
  svg_out = holder.get();
  svg.text(10, 20, style.title, 14, "start", true);
  legend(&svg, style.series, f.width());
  for (size_t p = 0; p < panels.size(); ++p) {
    const int64_t pi = static_cast<int64_t>(p);
    const double x = f.x0(pi), y = f.y0(pi);
    svg.text(x + f.panel_w / 2, y - 8, panels[p].title, 12, "middle", true);
    for (int i = 0; i <= 4; ++i) {
      const double v = f.y_max * i / 4, yy = f.y_at(pi, v);
      svg.line(x, yy, x + f.panel_w, yy, "#e4e4e4");
      svg.text(x - 4, yy + 4, tick_label(v, style.percent), 10, "end");
    }
    svg.line(x, y + f.panel_h, x + f.panel_w, y + f.panel_h, "#555");
    svg.line(x, y, x, y + f.panel_h, "#555");
    svg.text(x + f.panel_w / 2, y + f.panel_h + 32, style.x_name, 11, "middle");
    svg.text(x - 40, y + f.panel_h / 2, style.y_name, 10, "middle", false, -90);
  }
  return f;
}

}  // namespace

std::string bar_chart_svg(const std::vector<BarPanel>& panels, const ChartStyle& style) {
  const int64_t n_series = static_cast<int64_t>(style.series.size());
  const int64_t n_x = static_cast<int64_t>(style.x_labels.size());
  const double bar_w = std::clamp(240.0 / static_cast<double>(std::max<int64_t>(1, n_x * n_series)), 2.0, 14.0);
  const double group_w = bar_w * static_cast<double>(n_series) + 6;
  const double panel_w = std::max(300.0, group_w * static_cast<double>(n_x) + 10);
  Svg* svg = nullptr;
  std::unique_ptr<Svg> holder;
  const Frame f = make_frame(panels, style, panel_w, {}, svg, holder);
  for (size_t p = 0; p < panels.size(); ++p) {
    const int64_t pi = static_cast<int64_t>(p);
    const double x = f.x0(pi), y = f.y0(pi);
    const double slot = f.panel_w / static_cast<double>(std::max<int64_t>(1, n_x));
    for (int64_t xi = 0; xi < n_x; ++xi) {
      const double gx = x + slot * static_cast<double>(xi) + (slot - group_w + 6) / 2;
      for (int64_t s = 0; s < n_series && s < static_cast<int64_t>(panels[p].values.size()); ++s) {
        if (xi >= static_cast<int64_t>(panels[p].values[s].size())) continue;
        const double v = panels[p].values[s][xi], top = f.y_at(pi, v);
        svg->rect(gx + bar_w * static_cast<double>(s), top, bar_w - 0.5, y + f.panel_h - top,
                  series_colour(s, n_series),
                  style.series[s] + ", " + style.x_labels[xi] + ": " + tick_label(v, style.percent));
      }
      svg->text(x + slot * (static_cast<double>(xi) + 0.5), y + f.panel_h + 14, style.x_labels[xi], 10, "middle");
    }
    if (style.reference >= 0) {
      const double ry = f.y_at(pi, style.reference);
      svg->line(x, ry, x + f.panel_w, ry, "#444", 1, true);
      svg->text(x + f.panel_w - 2, ry - 3, style.reference_label, 9, "end");
    }
  }
  return svg->str();
}

std::string line_chart_svg(const std::vector<BarPanel>& panels, const ChartStyle& style,
                           const std::vector<double>& references) {
  const int64_t n_series = static_cast<int64_t>(style.series.size());
  const int64_t n_x = static_cast<int64_t>(style.x_labels.size());
  const double panel_w = std::max(320.0, 22.0 * static_cast<double>(n_x));
  Svg* svg = nullptr;
  std::unique_ptr<Svg> holder;
  const Frame f = make_frame(panels, style, panel_w, references, svg, holder);
  for (size_t p = 0; p < panels.size(); ++p) {
    const int64_t pi = static_cast<int64_t>(p);
    const double x = f.x0(pi), y = f.y0(pi);
    const double slot = f.panel_w / static_cast<double>(std::max<int64_t>(1, n_x));
    auto x_at = [&](int64_t xi) { return x + slot * (static_cast<double>(xi) + 0.5); };
    const int64_t label_every = std::max<int64_t>(1, n_x / 16);
    for (int64_t xi = 0; xi < n_x; ++xi)
      if (xi % label_every == 0) svg->text(x_at(xi), y + f.panel_h + 14, style.x_labels[xi], 10, "middle");
    for (int64_t s = 0; s < n_series && s < static_cast<int64_t>(panels[p].values.size()); ++s) {
      std::vector<double> xs, ys;
      const std::string colour = series_colour(s, n_series);
      for (int64_t xi = 0; xi < n_x && xi < static_cast<int64_t>(panels[p].values[s].size()); ++xi) {
        const double v = panels[p].values[s][xi];
        xs.push_back(x_at(xi));
        ys.push_back(f.y_at(pi, v));
        svg->circle(xs.back(), ys.back(), 2.5, colour,
                    style.series[s] + ", " + style.x_labels[xi] + ": " + tick_label(v, style.percent));
      }
      svg->polyline(xs, ys, colour);
    }
    const double ref = p < references.size() ? references[p] : style.reference;
    if (ref >= 0) {
      const double ry = f.y_at(pi, ref);
      svg->line(x, ry, x + f.panel_w, ry, "#444", 1, true);
      char buf[32];
      std::snprintf(buf, sizeof buf, style.percent ? "%.1f%%" : "%.3g", style.percent ? 100 * ref : ref);
      svg->text(x + f.panel_w - 2, ry - 3, style.reference_label + " " + buf, 9, "end");
    }
  }
  return svg->str();
}

}  // namespace smoe
