// report.cpp: progress line, CSV log and SVG plots of a training run.
#include "train/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace smoe::train {

namespace {

std::string hms(double s) {
  const int64_t t = static_cast<int64_t>(std::max(0.0, s));
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                               static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  else std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(t / 60), static_cast<long long>(t % 60));
  return buf;
}

// Mean of values[i - w + 1 .. i]: smoothing for noisy per-step curves.
std::vector<double> smooth(const std::vector<double>& v, size_t w) {
  std::vector<double> out(v.size());
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    s += v[i];
    if (i >= w) s -= v[i - w];
    out[i] = s / static_cast<double>(std::min(i + 1, w));
  }
  return out;
}

const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                         "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"};

struct Panel {
  double x, y, w, h;               // pixel box
  double x0, x1, y0, y1;           // data range
  double px(double v) const { return x + (v - x0) / std::max(1e-12, x1 - x0) * w; }
  double py(double v) const { return y + h - (v - y0) / std::max(1e-12, y1 - y0) * h; }
};

void axes(std::ostringstream& s, const Panel& p, const std::string& title, const std::string& xlabel) {
  s << "<rect x='" << p.x << "' y='" << p.y << "' width='" << p.w << "' height='" << p.h
    << "' fill='none' stroke='#444'/>\n";
  s << "<text x='" << p.x + p.w / 2 << "' y='" << p.y - 6 << "' text-anchor='middle' font-size='13'>" << title
    << "</text>\n";
  for (int i = 0; i <= 4; ++i) {
    const double yv = p.y0 + (p.y1 - p.y0) * i / 4.0, xv = p.x0 + (p.x1 - p.x0) * i / 4.0;
    s << "<text x='" << p.x - 4 << "' y='" << p.py(yv) + 4 << "' text-anchor='end' font-size='10'>"
      << std::round(yv * 1000) / 1000 << "</text>\n";
    s << "<line x1='" << p.x << "' x2='" << p.x + p.w << "' y1='" << p.py(yv) << "' y2='" << p.py(yv)
      << "' stroke='#ddd'/>\n";
    s << "<text x='" << p.px(xv) << "' y='" << p.y + p.h + 14 << "' text-anchor='middle' font-size='10'>"
      << std::llround(xv) << "</text>\n";
  }
  s << "<text x='" << p.x + p.w / 2 << "' y='" << p.y + p.h + 28 << "' text-anchor='middle' font-size='11'>"
    << xlabel << "</text>\n";
}

void polyline(std::ostringstream& s, const Panel& p, const std::vector<double>& xs, const std::vector<double>& ys,
              const char* color) {
  if (xs.empty()) return;
  s << "<polyline fill='none' stroke='" << color << "' stroke-width='1.5' points='";
  for (size_t i = 0; i < xs.size(); ++i) s << p.px(xs[i]) << "," << p.py(ys[i]) << " ";
  s << "'/>\n";
}

void save(const std::string& path, const std::string& body, double w, double h) {
  std::ofstream out(path);
  SMOE_CHECK(out, "cannot write ", path);
  out << "<svg xmlns='http://www.w3.org/2000/svg' width='" << w << "' height='" << h
      << "' font-family='sans-serif'>\n<rect width='100%' height='100%' fill='white'/>\n"
      << body << "</svg>\n";
}

}  // namespace

std::string progress_line(const StepRecord& r, int64_t total_steps, double last_val) {
  char buf[256];
  const double per_step = r.elapsed_s / static_cast<double>(std::max<int64_t>(1, r.step));
  const double left = per_step * static_cast<double>(total_steps - r.step);
  std::snprintf(buf, sizeof buf, "step %lld/%lld | loss %.3f | val %s | aux %.3f | %.0f tok/s | %s elapsed, %s left",
                static_cast<long long>(r.step), static_cast<long long>(total_steps), r.loss,
                last_val >= 0 ? cat(std::round(last_val * 1000) / 1000).c_str() : "-", r.aux, r.tokens_per_s,
                hms(r.elapsed_s).c_str(), hms(left).c_str());
  return buf;
}

void write_csv(const std::vector<StepRecord>& history, int64_t n_layers, int64_t n_experts, const std::string& path) {
  std::ofstream out(path);
  SMOE_CHECK(out, "cannot write ", path);
  out << "step,lr,loss,aux,z,grad_norm,tokens_per_s,elapsed_s,val_loss";
  for (int64_t l = 0; l < n_layers; ++l)
    for (int64_t e = 0; e < n_experts; ++e) out << ",load_l" << l << "_e" << e;
  out << "\n";
  for (const StepRecord& r : history) {
    out << r.step << "," << r.lr << "," << r.loss << "," << r.aux << "," << r.z << "," << r.grad_norm << ","
        << r.tokens_per_s << "," << r.elapsed_s << ",";
    if (r.val_loss >= 0) out << r.val_loss;
    for (double s : r.expert_share) out << "," << s;
    out << "\n";
  }
}

void write_loss_svg(const std::vector<StepRecord>& history, const std::string& path) {
  std::vector<double> xs, ys, vx, vy;
  for (const StepRecord& r : history) {
    xs.push_back(static_cast<double>(r.step));
    ys.push_back(r.loss);
    if (r.val_loss >= 0) vx.push_back(static_cast<double>(r.step)), vy.push_back(r.val_loss);
  }
  ys = smooth(ys, 20);
  double lo = 1e30, hi = -1e30;
  for (double v : ys) lo = std::min(lo, v), hi = std::max(hi, v);
  for (double v : vy) lo = std::min(lo, v), hi = std::max(hi, v);
  if (xs.empty()) lo = 0, hi = 1;
  const Panel p{70, 40, 620, 320, xs.empty() ? 0 : xs.front(), xs.empty() ? 1 : xs.back(), std::floor(lo * 2) / 2,
                std::ceil(hi * 2) / 2};
  std::ostringstream s;
  axes(s, p, "cross-entropy (nats per token)", "step");
  polyline(s, p, xs, ys, kColors[0]);
  polyline(s, p, vx, vy, kColors[3]);
  for (size_t i = 0; i < vx.size(); ++i)
    s << "<circle cx='" << p.px(vx[i]) << "' cy='" << p.py(vy[i]) << "' r='2.5' fill='" << kColors[3] << "'/>\n";
  s << "<text x='" << p.x + p.w - 10 << "' y='" << p.y + 18 << "' text-anchor='end' font-size='12' fill='"
    << kColors[0] << "'>training (mean of 20 steps)</text>\n";
  s << "<text x='" << p.x + p.w - 10 << "' y='" << p.y + 34 << "' text-anchor='end' font-size='12' fill='"
    << kColors[3] << "'>validation</text>\n";
  save(path, s.str(), 720, 410);
}

void write_expert_load_svg(const std::vector<StepRecord>& history, int64_t n_layers, int64_t n_experts,
                           const std::string& path) {
  const int64_t cols = std::min<int64_t>(2, n_layers), rows = (n_layers + cols - 1) / cols;
  const double pw = 340, ph = 180;
  std::ostringstream s;
  std::vector<double> xs;
  for (const StepRecord& r : history) xs.push_back(static_cast<double>(r.step));
  const double fair = 1.0 / static_cast<double>(n_experts);
  for (int64_t l = 0; l < n_layers; ++l) {
    double hi = 2 * fair;
    std::vector<std::vector<double>> ys(static_cast<size_t>(n_experts));
    for (int64_t e = 0; e < n_experts; ++e) {
      for (const StepRecord& r : history) ys[e].push_back(r.expert_share.at(static_cast<size_t>(l * n_experts + e)));
      ys[e] = smooth(ys[e], 20);
      for (double v : ys[e]) hi = std::max(hi, v);
    }
    const Panel p{70 + static_cast<double>(l % cols) * (pw + 80), 40 + static_cast<double>(l / cols) * (ph + 70), pw, ph,
                  xs.empty() ? 0 : xs.front(), xs.empty() ? 1 : xs.back(), 0, std::ceil(hi * 20) / 20};
    axes(s, p, cat("layer ", l, ": share of routed tokens per expert"), "step");
    s << "<line x1='" << p.x << "' x2='" << p.x + p.w << "' y1='" << p.py(fair) << "' y2='" << p.py(fair)
      << "' stroke='#000' stroke-dasharray='4 3'/>\n";
    for (int64_t e = 0; e < n_experts; ++e) polyline(s, p, xs, ys[e], kColors[e % 12]);
  }
  // Legend: one colour per expert; the dashed line is the even share 1/E.
  s << "<text x='70' y='16' font-size='11'>mean of 20 steps; dashed: even share 1/" << n_experts << ";";
  for (int64_t e = 0; e < n_experts; ++e)
    s << " <tspan fill='" << kColors[e % 12] << "'>expert " << e << "</tspan>";
  s << "</text>\n";
  save(path, s.str(), 70 + static_cast<double>(cols) * (pw + 80), 40 + static_cast<double>(rows) * (ph + 70));
}

}  // namespace smoe::train
