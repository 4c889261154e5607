// A uniform grid of items filed by their centre: the spatial index of the greedy NMS kernels
// (cpu/greedy_nms.h for axis-aligned boxes, cpu/nms_rotated.cpp for rotated ones).
//
// Greedy NMS asks, for each candidate, "does a kept box suppress me?". Two boxes can overlap only
// when their centres are close, so kept boxes are filed by centre and a candidate scans only the
// cells within its reach. Each NMS kernel decides the reach (what "close" means for its boxes);
// this header only lays out the cells, files items and visits the cells of a rectangle.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

namespace roiops {

template <typename Item>
class CentreGrid {
 public:
  CentreGrid() = default;

  // A grid for items centred at (centre_x[i], centre_y[i]), the items that may ever be filed.
  // Cells are about one typical reach wide (the median of `reach`: a query then spans ~3 x 3
  // cells), but there are no more than ~2 cells per item. Every cell's slots are reserved up front
  // (as many as there are items centred in it), so filing is a store and a cell's items sit
  // contiguously.
  CentreGrid(const std::vector<double>& centre_x, const std::vector<double>& centre_y, std::vector<double> reach) {
    const int64_t n = static_cast<int64_t>(centre_x.size());
    if (n == 0) {
      return;  // nothing can ever be filed; every query finds nothing
    }
    const auto [lo_x, hi_x] = std::minmax_element(centre_x.begin(), centre_x.end());
    const auto [lo_y, hi_y] = std::minmax_element(centre_y.begin(), centre_y.end());
    auto mid = reach.begin() + reach.size() / 2;
    std::nth_element(reach.begin(), mid, reach.end());
    const double extent_x = *hi_x - *lo_x, extent_y = *hi_y - *lo_y;
    const double max_cells = 2.0 * static_cast<double>(n) + 16.0;
    double cell = std::max(*mid, 1e-300);
    cell = std::max(cell, std::sqrt(extent_x * extent_y / max_cells));
    cell = std::max(cell, std::max(extent_x, extent_y) / max_cells);
    origin_x_ = *lo_x;
    origin_y_ = *lo_y;
    inv_cell_ = 1.0 / cell;
    cells_x_ = std::max<int64_t>(1, static_cast<int64_t>(std::min(extent_x / cell, max_cells)) + 1);
    cells_y_ = std::max<int64_t>(1, static_cast<int64_t>(std::min(extent_y / cell, max_cells)) + 1);

    std::vector<int64_t> count(cells_x_ * cells_y_ + 1, 0);
    for (int64_t i = 0; i < n; ++i) {
      ++count[cell_index(centre_x[i], centre_y[i]) + 1];
    }
    std::partial_sum(count.begin(), count.end(), count.begin());
    start_ = std::move(count);
    fill_.assign(start_.begin(), start_.end() - 1);
    slots_.resize(start_.back());
  }

  // Files an item centred at (cx, cy); at most as many per cell as the constructor reserved.
  void insert(const Item& item, double cx, double cy) {
    slots_[fill_[cell_index(cx, cy)]++] = item;
  }

  // True when pred(item) holds for a filed item whose cell meets the rectangle
  // [cx - rx, cx + rx] x [cy - ry, cy + ry]; cells are visited row by row, items in filing order.
  template <typename Pred>
  bool any_near(double cx, double cy, double rx, double ry, Pred&& pred) const {
    if (slots_.empty()) {
      return false;
    }
    const int64_t gx1 = cell_of(cx - rx, origin_x_, cells_x_), gx2 = cell_of(cx + rx, origin_x_, cells_x_);
    const int64_t gy1 = cell_of(cy - ry, origin_y_, cells_y_), gy2 = cell_of(cy + ry, origin_y_, cells_y_);
    for (int64_t gy = gy1; gy <= gy2; ++gy) {
      for (int64_t gx = gx1; gx <= gx2; ++gx) {
        const int64_t c = gy * cells_x_ + gx;
        for (int64_t j = start_[c]; j < fill_[c]; ++j) {
          if (pred(slots_[j])) {
            return true;
          }
        }
      }
    }
    return false;
  }

 private:
  // The cell of coordinate v, clamped to the grid (a NaN lands in cell 0).
  int64_t cell_of(double v, double origin, int64_t cells) const {
    double c = (v - origin) * inv_cell_;
    c = c < 0.0 ? 0.0 : c;
    const double last = static_cast<double>(cells - 1);
    return static_cast<int64_t>(c < last ? c : last);
  }

  int64_t cell_index(double cx, double cy) const {
    return cell_of(cy, origin_y_, cells_y_) * cells_x_ + cell_of(cx, origin_x_, cells_x_);
  }

  double origin_x_ = 0, origin_y_ = 0, inv_cell_ = 1;
  int64_t cells_x_ = 1, cells_y_ = 1;
  std::vector<int64_t> start_, fill_;
  std::vector<Item> slots_;
};

}  // namespace roiops
