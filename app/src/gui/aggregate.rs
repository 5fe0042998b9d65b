//! Map aggregation: devices binned into a square grid in Web Mercator, so the map draws a
//! bounded number of shapes whatever the fleet size.
//!
//! A [`Grid`] is built for one zoom level from the devices that pass the filter: one
//! [`Cell`] per occupied grid square with its count, centroid and count per colour class, and
//! the member devices grouped by cell. The map draws a cell's devices one by one when they fit
//! (few members) and a cluster otherwise, and asks only for the cells in view
//! ([`Grid::visible`], a binary search per grid column), so a frame's work grows with what is
//! on screen, not with the fleet.
//!
//! Building is linear in the fleet for a large filtered list (O(n log n) for a short one) and
//! happens only when the data, the filter or the zoom level change
//! (the map also throttles rebuilds while data streams in). This module is plain code with no
//! egui: the map only draws what it computes.
//!
//! It also holds the map's selection geometry: [`point_in_polygon`] (even-odd rule) and
//! [`select_in_polygon`], which the lasso uses.

/// Number of colour classes a cell counts (see `gui::fleet::ColorMode`).
pub const CLASSES: usize = 8;

/// One occupied grid square.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub cx: u32,
    pub cy: u32,
    pub count: u32,
    /// Mean position of the members, normalised Web Mercator.
    pub centroid: [f64; 2],
    pub by_class: [u32; CLASSES],
    start: u32,
}

/// Devices binned for one zoom level.
#[derive(Debug, Clone, Default)]
pub struct Grid {
    /// The size of a grid square in normalised units (the whole world is 1).
    pub cell_size: f64,
    /// Cells sorted by (cx, cy).
    cells: Vec<Cell>,
    /// Device indices, grouped by cell in cell order, ascending within a cell.
    members: Vec<u32>,
}

/// The grid square size for `zoom`: `cell_px` screen pixels at that zoom, walkers' 256-pixel
/// tiles.
pub fn cell_size_for(zoom: u8, cell_px: f64) -> f64 {
    cell_px / (256.0 * f64::from(1u32 << zoom.min(30)))
}

impl Grid {
    /// Bins `devices` (distinct indices into `xs`, `ys`, `class`) into squares of `cell_size`.
    ///
    /// A list that is a good part of the fleet is binned in index order through a mask, each
    /// device's cell found in a map of the (few hundred) occupied cells, so a million devices
    /// take two linear passes rather than a million-element sort; a short list is sorted. Both
    /// give the same grid (cells by square, members ascending, sums in member order).
    pub fn build(xs: &[f32], ys: &[f32], class: &[u8], devices: &[u32], cell_size: f64) -> Self {
        if devices.len() < 4096 || devices.len() * 8 < xs.len() {
            return Self::build_sorted(xs, ys, class, devices, cell_size);
        }
        let inv = 1.0 / cell_size;
        let max_cell = (inv.ceil() as u64).min(u64::from(u32::MAX)) as u32;
        let key = |i: usize| {
            let cx = ((f64::from(xs[i]) * inv).max(0.0) as u32).min(max_cell);
            let cy = ((f64::from(ys[i]) * inv).max(0.0) as u32).min(max_cell);
            (u64::from(cx) << 32) | u64::from(cy)
        };
        let mut mask = vec![false; xs.len()];
        for &i in devices {
            if let Some(m) = mask.get_mut(i as usize) {
                *m = true;
            }
        }
        // Pass 1, in index order: each member's cell, numbered as first seen.
        let mut ids: std::collections::HashMap<u64, u32, convoy_core::fasthash::FastBuild> =
            std::collections::HashMap::default();
        let mut keys: Vec<u64> = Vec::new();
        let mut counts: Vec<u32> = Vec::new();
        let mut ordered: Vec<(u32, u32)> = Vec::with_capacity(devices.len()); // (cell id, index)
        let mut last = (u64::MAX, 0u32);
        for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
            let k = key(i);
            let id = if k == last.0 {
                last.1
            } else {
                let id = *ids.entry(k).or_insert_with(|| {
                    keys.push(k);
                    counts.push(0);
                    (keys.len() - 1) as u32
                });
                last = (k, id);
                id
            };
            counts[id as usize] += 1;
            ordered.push((id, i as u32));
        }
        // Cells in square order; each cell's members in index order after them.
        let mut by_square: Vec<u32> = (0..keys.len() as u32).collect();
        by_square.sort_unstable_by_key(|&id| keys[id as usize]);
        let mut start = vec![0u32; keys.len()];
        let mut at = 0u32;
        for &id in &by_square {
            start[id as usize] = at;
            at += counts[id as usize];
        }
        let mut members = vec![0u32; ordered.len()];
        let mut fill = start.clone();
        for &(id, i) in &ordered {
            members[fill[id as usize] as usize] = i;
            fill[id as usize] += 1;
        }
        let cells = by_square
            .iter()
            .map(|&id| {
                let k = keys[id as usize];
                let s = start[id as usize];
                let count = counts[id as usize];
                let mut by_class = [0; CLASSES];
                let mut sums = (0.0f64, 0.0f64);
                for &i in &members[s as usize..(s + count) as usize] {
                    let c =
                        usize::from(class.get(i as usize).copied().unwrap_or(0)).min(CLASSES - 1);
                    by_class[c] += 1;
                    sums.0 += f64::from(xs[i as usize]);
                    sums.1 += f64::from(ys[i as usize]);
                }
                Cell {
                    cx: (k >> 32) as u32,
                    cy: k as u32,
                    count,
                    centroid: [sums.0 / f64::from(count), sums.1 / f64::from(count)],
                    by_class,
                    start: s,
                }
            })
            .collect();
        Self {
            cell_size,
            cells,
            members,
        }
    }

    /// [`Grid::build`] by sorting the devices by (cell, index): what it does for few devices,
    /// and the reference the linear build is tested and measured against.
    pub fn build_sorted(
        xs: &[f32],
        ys: &[f32],
        class: &[u8],
        devices: &[u32],
        cell_size: f64,
    ) -> Self {
        let inv = 1.0 / cell_size;
        let max_cell = (inv.ceil() as u64).min(u64::from(u32::MAX)) as u32;
        let mut keyed: Vec<(u64, u32)> = devices
            .iter()
            .map(|&i| {
                let cx = ((f64::from(xs[i as usize]) * inv).max(0.0) as u32).min(max_cell);
                let cy = ((f64::from(ys[i as usize]) * inv).max(0.0) as u32).min(max_cell);
                ((u64::from(cx) << 32) | u64::from(cy), i)
            })
            .collect();
        keyed.sort_unstable();
        let mut cells: Vec<Cell> = Vec::new();
        let mut members = Vec::with_capacity(keyed.len());
        let mut sums = (0.0f64, 0.0f64);
        for (pos, &(key, i)) in keyed.iter().enumerate() {
            let (cx, cy) = ((key >> 32) as u32, key as u32);
            let same = cells.last().is_some_and(|c| c.cx == cx && c.cy == cy);
            if !same {
                if let Some(last) = cells.last_mut() {
                    last.centroid = [
                        sums.0 / f64::from(last.count),
                        sums.1 / f64::from(last.count),
                    ];
                }
                sums = (0.0, 0.0);
                cells.push(Cell {
                    cx,
                    cy,
                    count: 0,
                    centroid: [0.0, 0.0],
                    by_class: [0; CLASSES],
                    start: pos as u32,
                });
            }
            if let Some(c) = cells.last_mut() {
                c.count += 1;
                let k = usize::from(class.get(i as usize).copied().unwrap_or(0)).min(CLASSES - 1);
                c.by_class[k] += 1;
            }
            sums.0 += f64::from(xs[i as usize]);
            sums.1 += f64::from(ys[i as usize]);
            members.push(i);
        }
        if let Some(last) = cells.last_mut() {
            last.centroid = [
                sums.0 / f64::from(last.count),
                sums.1 / f64::from(last.count),
            ];
        }
        Self {
            cell_size,
            cells,
            members,
        }
    }

    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// The devices of `cell`, ascending.
    pub fn members(&self, cell: &Cell) -> &[u32] {
        let start = cell.start as usize;
        &self.members[start..start + cell.count as usize]
    }

    /// Devices binned (those that passed the filter).
    pub fn device_count(&self) -> usize {
        self.members.len()
    }

    /// Cells whose square intersects the normalised rectangle `min`–`max`, column by column.
    pub fn visible(&self, min: [f64; 2], max: [f64; 2]) -> impl Iterator<Item = &Cell> {
        let inv = 1.0 / self.cell_size;
        let to_cell = |v: f64| (v * inv).floor().max(0.0).min(f64::from(u32::MAX)) as u32;
        let (x0, x1) = (to_cell(min[0]), to_cell(max[0]));
        let (y0, y1) = (to_cell(min[1]), to_cell(max[1]));
        let first = self.cells.partition_point(|c| c.cx < x0);
        let cells = &self.cells[first..];
        let end = cells.partition_point(|c| c.cx <= x1);
        let cells = &cells[..end];
        // Within each column, binary-search the visible rows.
        let mut out = Vec::new();
        let mut at = 0;
        while at < cells.len() {
            let cx = cells[at].cx;
            let column_len = cells[at..].partition_point(|c| c.cx == cx);
            let column = &cells[at..at + column_len];
            let lo = column.partition_point(|c| c.cy < y0);
            let hi = column.partition_point(|c| c.cy <= y1);
            out.extend(&column[lo..hi]);
            at += column_len;
        }
        out.into_iter()
    }
}

/// Whether `p` lies inside the closed polygon `poly` (even-odd rule: a point in a loop the
/// outline makes twice is outside). Fewer than three vertices enclose nothing. A point exactly
/// on an edge may fall either way.
pub fn point_in_polygon(point: [f64; 2], poly: &[[f64; 2]]) -> bool {
    if poly.len() < 3 {
        return false;
    }
    let mut inside = false;
    let mut prev = poly[poly.len() - 1];
    for &vertex in poly {
        // The edge straddles the horizontal through the point, and crosses it to its right.
        if (vertex[1] > point[1]) != (prev[1] > point[1]) {
            let cross_x =
                vertex[0] + (point[1] - vertex[1]) * (prev[0] - vertex[0]) / (prev[1] - vertex[1]);
            if point[0] < cross_x {
                inside = !inside;
            }
        }
        prev = vertex;
    }
    inside
}

/// The devices among `devices` (indices into `xs`, `ys`) inside `poly`, in the order given.
/// The polygon's bounding box is checked first, so a small lasso over a large fleet costs one
/// comparison per device.
pub fn select_in_polygon(xs: &[f32], ys: &[f32], devices: &[u32], poly: &[[f64; 2]]) -> Vec<u32> {
    if poly.len() < 3 {
        return Vec::new();
    }
    let mut b = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
    for p in poly {
        b = [
            b[0].min(p[0]),
            b[1].min(p[1]),
            b[2].max(p[0]),
            b[3].max(p[1]),
        ];
    }
    devices
        .iter()
        .copied()
        .filter(|&i| {
            let p = [f64::from(xs[i as usize]), f64::from(ys[i as usize])];
            p[0] >= b[0]
                && p[0] <= b[2]
                && p[1] >= b[1]
                && p[1] <= b[3]
                && point_in_polygon(p, poly)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_inside(poly: &[[f64; 2]], inside: &[[f64; 2]], outside: &[[f64; 2]]) {
        for &p in inside {
            assert!(point_in_polygon(p, poly), "{p:?} should be inside");
        }
        for &p in outside {
            assert!(!point_in_polygon(p, poly), "{p:?} should be outside");
        }
    }

    #[test]
    fn points_in_a_square_and_a_concave_u() {
        let square = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
        check_inside(
            &square,
            &[[0.5, 0.5], [0.01, 0.99], [0.99, 0.01]],
            &[[1.5, 0.5], [-0.1, 0.5], [0.5, 1.01], [0.5, -3.0]],
        );
        // A U opening upwards: the notch between the arms is outside.
        let u = [
            [0.0, 0.0],
            [3.0, 0.0],
            [3.0, 3.0],
            [2.0, 3.0],
            [2.0, 1.0],
            [1.0, 1.0],
            [1.0, 3.0],
            [0.0, 3.0],
        ];
        check_inside(
            &u,
            &[[0.5, 2.5], [2.5, 2.5], [1.5, 0.5], [0.5, 0.5]],
            &[[1.5, 2.0], [1.5, 1.1], [3.5, 2.0], [1.5, 3.5]],
        );
        // Clockwise or anticlockwise makes no difference.
        let mut reversed = u;
        reversed.reverse();
        check_inside(&reversed, &[[0.5, 2.5]], &[[1.5, 2.0]]);
    }

    #[test]
    fn a_figure_eight_lasso_and_degenerate_ones() {
        // A bow tie: two triangles meeting at (1, 1); both lobes are inside.
        let bow = [[0.0, 0.0], [2.0, 2.0], [2.0, 0.0], [0.0, 2.0]];
        check_inside(&bow, &[[0.2, 1.0], [1.8, 1.0]], &[[1.0, 0.2], [1.0, 1.8]]);
        assert!(!point_in_polygon([0.5, 0.5], &[]));
        assert!(!point_in_polygon([0.5, 0.5], &[[0.0, 0.0], [1.0, 1.0]]));
        // All vertices on one line enclose nothing.
        assert!(!point_in_polygon(
            [0.5, 0.5],
            &[[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]
        ));
    }

    #[test]
    fn the_lasso_selects_filtered_devices_inside_in_the_given_order() {
        let xs = [0.1f32, 0.5, 0.52, 0.9, 0.5];
        let ys = [0.1f32, 0.5, 0.48, 0.9, 0.9];
        let tri = [[0.4, 0.4], [0.7, 0.4], [0.4, 0.7]];
        assert_eq!(select_in_polygon(&xs, &ys, &[0, 1, 2, 3, 4], &tri), [1, 2]);
        assert_eq!(select_in_polygon(&xs, &ys, &[2, 3], &tri), [2]);
        assert!(select_in_polygon(&xs, &ys, &[0, 1, 2], &tri[..2]).is_empty());
    }

    fn grid(points: &[(f32, f32, u8)], cell: f64) -> Grid {
        let xs: Vec<f32> = points.iter().map(|p| p.0).collect();
        let ys: Vec<f32> = points.iter().map(|p| p.1).collect();
        let cl: Vec<u8> = points.iter().map(|p| p.2).collect();
        let all: Vec<u32> = (0..points.len() as u32).collect();
        Grid::build(&xs, &ys, &cl, &all, cell)
    }

    /// The linear build (a large filtered list) gives exactly the sorted build's grid: the
    /// same cells in the same order, members, counts per class, and centroids to the bit.
    #[test]
    fn the_linear_build_bins_as_the_sorted_one() {
        use convoy_core::rng::SeededRng;
        let mut rng = SeededRng::new(9);
        let n = 30_000;
        // Clustered positions (most devices in a few cities), some at the edges.
        let centres: Vec<(f64, f64)> = (0..12).map(|_| (rng.next_f64(), rng.next_f64())).collect();
        let mut xs = Vec::with_capacity(n);
        let mut ys = Vec::with_capacity(n);
        for k in 0..n {
            let (cx, cy) = centres[rng.below(centres.len() as u64) as usize];
            let spread = if k % 97 == 0 { 0.5 } else { 0.01 };
            xs.push(((cx + (rng.next_f64() - 0.5) * spread).clamp(0.0, 1.0)) as f32);
            ys.push(((cy + (rng.next_f64() - 0.5) * spread).clamp(0.0, 1.0)) as f32);
        }
        let class: Vec<u8> = (0..n).map(|_| rng.below(9) as u8).collect();
        for keep in [1.0, 0.5, 0.2] {
            // The filtered list in a display order, not index order.
            let mut devices: Vec<u32> = (0..n as u32).filter(|_| rng.next_f64() < keep).collect();
            devices.sort_by_key(|&i| (class[i as usize], std::cmp::Reverse(i)));
            for zoom in [0u8, 3, 6, 9, 14] {
                let cell = cell_size_for(zoom, 60.0);
                let linear = Grid::build(&xs, &ys, &class, &devices, cell);
                let sorted = Grid::build_sorted(&xs, &ys, &class, &devices, cell);
                assert!(
                    linear.cells().len() > 1 || zoom == 0,
                    "zoom {zoom}: cells to compare"
                );
                assert_eq!(linear.cells(), sorted.cells(), "keep {keep}, zoom {zoom}");
                assert_eq!(linear.members, sorted.members, "keep {keep}, zoom {zoom}");
                assert_eq!(linear.device_count(), devices.len());
            }
        }
    }

    #[test]
    fn bins_counts_classes_and_centroids() {
        let g = grid(
            &[
                (0.11, 0.11, 0),
                (0.13, 0.19, 2),
                (0.55, 0.15, 1),
                (0.12, 0.12, 2),
            ],
            0.1,
        );
        let cells = g.cells();
        assert_eq!(cells.len(), 2);
        assert_eq!((cells[0].cx, cells[0].cy, cells[0].count), (1, 1, 3));
        assert_eq!(cells[0].by_class[..3], [1, 0, 2]);
        assert!((cells[0].centroid[0] - 0.12).abs() < 1e-6);
        assert!((cells[0].centroid[1] - 0.14).abs() < 1e-6);
        assert_eq!(g.members(&cells[0]), [0, 1, 3]);
        assert_eq!((cells[1].cx, cells[1].cy), (5, 1));
        assert_eq!(g.members(&cells[1]), [2]);
        assert_eq!(g.device_count(), 4);
    }

    #[test]
    fn only_filtered_devices_are_binned() {
        let xs = [0.1f32, 0.2, 0.3];
        let ys = [0.1f32, 0.2, 0.3];
        let g = Grid::build(&xs, &ys, &[0, 0, 0], &[0, 2], 0.05);
        assert_eq!(g.device_count(), 2);
        let all: Vec<u32> = g
            .cells()
            .iter()
            .flat_map(|c| g.members(c).to_vec())
            .collect();
        assert_eq!(all, [0, 2]);
    }

    #[test]
    fn visible_returns_exactly_the_cells_in_view() {
        // A 20 x 20 lattice, one device per cell of 0.05.
        let mut pts = Vec::new();
        for i in 0..20 {
            for j in 0..20 {
                pts.push((i as f32 * 0.05 + 0.01, j as f32 * 0.05 + 0.01, 0));
            }
        }
        let g = grid(&pts, 0.05);
        assert_eq!(g.cells().len(), 400);
        let seen: Vec<(u32, u32)> = g
            .visible([0.26, 0.51], [0.39, 0.6])
            .map(|c| (c.cx, c.cy))
            .collect();
        let mut expected = Vec::new();
        for cx in 5..=7 {
            for cy in 10..=12 {
                expected.push((cx, cy));
            }
        }
        assert_eq!(seen, expected);
        assert_eq!(g.visible([2.0, 2.0], [3.0, 3.0]).count(), 0);
    }

    #[test]
    fn cell_size_halves_per_zoom_level() {
        assert_eq!(cell_size_for(0, 64.0), 0.25);
        assert_eq!(cell_size_for(3, 64.0), 0.25 / 8.0);
    }
}
