//! Integer geometry: rectangles, wall sweeps, distances and line of sight.
//!
//! Every position is an integer number of millimetres; no floating point is used, so
//! results are identical on every platform.

use serde::{Deserialize, Serialize};

/// An axis-aligned rectangle in millimetres, half-open: it contains `x0 <= x < x1` and
/// `y0 <= y < y1`. In TOML it is written `[x0, y0, x1, y1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "[i32; 4]", into = "[i32; 4]")]
pub struct Rect {
    /// Left edge (inclusive).
    pub x0: i32,
    /// Top edge (inclusive).
    pub y0: i32,
    /// Right edge (exclusive).
    pub x1: i32,
    /// Bottom edge (exclusive).
    pub y1: i32,
}

impl From<[i32; 4]> for Rect {
    fn from(a: [i32; 4]) -> Self {
        Rect {
            x0: a[0],
            y0: a[1],
            x1: a[2],
            y1: a[3],
        }
    }
}

impl From<Rect> for [i32; 4] {
    fn from(r: Rect) -> Self {
        [r.x0, r.y0, r.x1, r.y1]
    }
}

impl Rect {
    /// A rectangle from its corners.
    pub const fn new(x0: i32, y0: i32, x1: i32, y1: i32) -> Self {
        Rect { x0, y0, x1, y1 }
    }

    /// Whether the rectangle is non-empty.
    pub fn is_valid(&self) -> bool {
        self.x0 < self.x1 && self.y0 < self.y1
    }

    /// Whether `p` lies inside.
    pub fn contains(&self, p: (i32, i32)) -> bool {
        p.0 >= self.x0 && p.0 < self.x1 && p.1 >= self.y0 && p.1 < self.y1
    }

    /// Whether the rectangle lies within a zone of `width` x `height`.
    pub fn within(&self, width: i32, height: i32) -> bool {
        self.x0 >= 0 && self.y0 >= 0 && self.x1 <= width && self.y1 <= height
    }

    /// The centre point (rounded down).
    pub fn center(&self) -> (i32, i32) {
        (
            ((i64::from(self.x0) + i64::from(self.x1)) / 2) as i32,
            ((i64::from(self.y0) + i64::from(self.y1)) / 2) as i32,
        )
    }
}

/// Squared distance between two points.
pub fn dist_sq(a: (i32, i32), b: (i32, i32)) -> i64 {
    let dx = i64::from(a.0) - i64::from(b.0);
    let dy = i64::from(a.1) - i64::from(b.1);
    dx * dx + dy * dy
}

/// Whether `a` and `b` are at most `range` millimetres apart.
pub fn within_range(a: (i32, i32), b: (i32, i32), range: i32) -> bool {
    let r = i64::from(range.max(0));
    dist_sq(a, b) <= r * r
}

/// Integer square root (floor). The standard library's: exact for every `u64` and a few
/// nanoseconds, where the Newton iteration from `n` it replaced took ~30 divisions for a
/// zone-sized distance (a third of `World::step` in the worker tick bench's arena).
pub fn isqrt(n: u64) -> u64 {
    n.isqrt()
}

/// Whether `p` is inside any wall.
pub fn in_wall(p: (i32, i32), walls: &[Rect]) -> bool {
    walls.iter().any(|w| w.contains(p))
}

/// Moves `p` by `d`, first along x then along y, stopping just before any wall and at
/// the zone bounds `0..=width`, `0..=height`. The sweep is exact (no tunnelling through
/// thin walls) and sliding along a wall falls out of the per-axis split. A point that
/// starts outside every wall never ends inside one.
pub fn sweep(p: (i32, i32), d: (i32, i32), walls: &[Rect], width: i32, height: i32) -> (i32, i32) {
    let mut x = p.0.saturating_add(d.0).clamp(0, width.max(0));
    for w in walls {
        if p.1 < w.y0 || p.1 >= w.y1 {
            continue;
        }
        if x > p.0 && p.0 < w.x0 && x >= w.x0 {
            x = w.x0 - 1;
        } else if x < p.0 && p.0 >= w.x1 && x < w.x1 {
            x = w.x1;
        }
    }
    let mut y = p.1.saturating_add(d.1).clamp(0, height.max(0));
    for w in walls {
        if x < w.x0 || x >= w.x1 {
            continue;
        }
        if y > p.1 && p.1 < w.y0 && y >= w.y0 {
            y = w.y0 - 1;
        } else if y < p.1 && p.1 >= w.y1 && y < w.y1 {
            y = w.y1;
        }
    }
    (x, y)
}

/// The displacement of at most `step` millimetres from `from` toward `to`.
pub fn step_toward(from: (i32, i32), to: (i32, i32), step: i32) -> (i32, i32) {
    let dx = i64::from(to.0) - i64::from(from.0);
    let dy = i64::from(to.1) - i64::from(from.1);
    let d = isqrt((dx * dx + dy * dy) as u64) as i64;
    let step = i64::from(step.max(0));
    if d <= step {
        (dx as i32, dy as i32)
    } else {
        ((dx * step / d) as i32, (dy * step / d) as i32)
    }
}

/// Spacing of the samples [`line_of_sight`] takes, in millimetres. Walls thinner than
/// this may be seen through; the content validator requires walls at least this thick.
pub const LOS_STEP_MM: i32 = 100;

/// Whether the segment `a`..`b` crosses no wall (sampled every [`LOS_STEP_MM`]).
pub fn line_of_sight(a: (i32, i32), b: (i32, i32), walls: &[Rect]) -> bool {
    if walls.is_empty() {
        return true;
    }
    let dx = i64::from(b.0) - i64::from(a.0);
    let dy = i64::from(b.1) - i64::from(a.1);
    let len = isqrt((dx * dx + dy * dy) as u64) as i64;
    let n = len / i64::from(LOS_STEP_MM) + 1;
    (0..=n).all(|i| {
        let p = (
            (i64::from(a.0) + dx * i / n) as i32,
            (i64::from(a.1) + dy * i / n) as i32,
        );
        !in_wall(p, walls)
    })
}

/// Whether `target - origin` lies within 60 degrees of `facing` (a 120 degree cone).
/// A target exactly at `origin` counts as inside.
pub fn in_cone(origin: (i32, i32), facing: (i32, i32), target: (i32, i32)) -> bool {
    let dx = i128::from(target.0) - i128::from(origin.0);
    let dy = i128::from(target.1) - i128::from(origin.1);
    if dx == 0 && dy == 0 {
        return true;
    }
    let (fx, fy) = (i128::from(facing.0), i128::from(facing.1));
    let dot = dx * fx + dy * fy;
    if dot <= 0 {
        return false;
    }
    // cos(angle) >= 1/2  <=>  4 dot^2 >= |d|^2 |f|^2
    4 * dot * dot >= (dx * dx + dy * dy) * (fx * fx + fy * fy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sweep_stops_before_wall_and_slides() {
        let walls = [Rect::new(100, 0, 200, 1000)];
        assert_eq!(
            sweep((50, 500), (400, 0), &walls, 10_000, 10_000),
            (99, 500)
        );
        // diagonal into the wall: x blocked, y slides
        assert_eq!(
            sweep((50, 500), (400, 30), &walls, 10_000, 10_000),
            (99, 530)
        );
        assert_eq!(
            sweep((300, 500), (-400, 0), &walls, 10_000, 10_000),
            (200, 500)
        );
        // thin wall cannot be tunnelled
        let thin = [Rect::new(100, 0, 101, 1000)];
        assert_eq!(sweep((0, 10), (5000, 0), &thin, 10_000, 10_000), (99, 10));
    }

    #[test]
    fn los_and_cone() {
        let walls = [Rect::new(100, 0, 300, 1000)];
        assert!(!line_of_sight((0, 500), (1000, 500), &walls));
        assert!(line_of_sight((0, 1500), (1000, 1500), &walls));
        assert!(in_cone((0, 0), (1000, 0), (100, 50)));
        assert!(!in_cone((0, 0), (1000, 0), (10, 100)));
        assert!(!in_cone((0, 0), (1000, 0), (-100, 0)));
        assert_eq!(isqrt(99), 9);
        assert_eq!(isqrt(100), 10);
        assert_eq!(isqrt(u64::MAX), 4_294_967_295);
    }

    proptest! {
        #[test]
        fn sweep_never_ends_in_wall(
            sx in 0i32..2000, sy in 0i32..2000, dx in -500i32..500, dy in -500i32..500,
            walls in prop::collection::vec((0i32..2000, 0i32..2000, 1i32..400, 1i32..400), 0..6),
        ) {
            let walls: Vec<Rect> = walls.into_iter().map(|(x, y, w, h)| Rect::new(x, y, x + w, y + h)).collect();
            prop_assume!(!in_wall((sx, sy), &walls));
            let p = sweep((sx, sy), (dx, dy), &walls, 2000, 2000);
            prop_assert!(!in_wall(p, &walls), "{:?} ended in a wall", p);
            prop_assert!((p.0 - sx).abs() <= dx.abs() && (p.1 - sy).abs() <= dy.abs());
        }

        #[test]
        fn isqrt_is_the_floor_square_root(n in any::<u64>()) {
            let r = u128::from(isqrt(n));
            prop_assert!(r * r <= u128::from(n) && u128::from(n) < (r + 1) * (r + 1));
        }
    }
}
