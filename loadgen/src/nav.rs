//! Bot navigation: zone maps from the game's content, a coarse walkable grid, breadth-first
//! paths around walls (the game has no path finding; monsters slide along walls, bots should
//! not get stuck on them), and exact movement prediction with the game's own integer rules.

use std::collections::{HashMap, VecDeque};

use zonehost_game::geom::{in_wall, sweep};
use zonehost_game::movement::{step_mm, velocity_mms};
use zonehost_game::{Content, PlayerInput, Rect};

/// Grid cell size, millimetres.
const CELL_MM: i32 = 1000;
/// Clearance kept from walls when planning, millimetres.
const CLEARANCE_MM: i32 = 350;
/// Sampling step when checking that a straight segment is walkable, millimetres.
const SEGMENT_STEP_MM: i64 = 250;

/// What a bot knows about one zone.
#[derive(Debug, Clone)]
pub(crate) struct ZoneMap {
    pub(crate) id: u16,
    pub(crate) width: i32,
    pub(crate) height: i32,
    pub(crate) town: bool,
    pub(crate) walls: Vec<Rect>,
    /// Portal rectangles and their target zones.
    pub(crate) portals: Vec<(Rect, u16)>,
    /// Lowest monster level spawned here (`None` for towns).
    pub(crate) min_monster_level: Option<u8>,
    cols: i32,
    rows: i32,
    blocked: Vec<bool>,
}

/// Every zone bots may meet, by id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Atlas {
    zones: HashMap<u16, ZoneMap>,
}

impl Atlas {
    /// The zones shipped with the game (`content/zones`), which the server uses unless it
    /// runs with its own content directory.
    pub(crate) fn builtin() -> Self {
        match Content::builtin() {
            Ok(c) => Self::from_content(&c),
            Err(e) => {
                tracing::warn!(error = %e, "built-in content did not load; bots walk straight");
                Self::default()
            }
        }
    }

    /// The zones of a content directory as the server reads it (`DIR/zones/*.toml`).
    pub(crate) fn from_dir(dir: &std::path::Path) -> Result<Self, String> {
        let zones = dir.join("zones");
        let mut files: Vec<_> = std::fs::read_dir(&zones)
            .map_err(|e| format!("{}: {e}", zones.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let sources = files
            .iter()
            .map(|f| std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display())))
            .collect::<Result<Vec<_>, _>>()?;
        let content =
            Content::from_sources(&sources).map_err(|e| format!("{}: {e}", zones.display()))?;
        Ok(Self::from_content(&content))
    }

    pub(crate) fn from_content(content: &Content) -> Self {
        let zones = content
            .zones()
            .map(|z| {
                let map = ZoneMap::new(
                    z.id,
                    z.width_mm,
                    z.height_mm,
                    z.town,
                    z.walls.clone(),
                    z.portals.iter().map(|p| (p.area, p.target)).collect(),
                    z.spawns.iter().map(|s| s.level_min).min(),
                );
                (z.id, map)
            })
            .collect();
        Self { zones }
    }

    pub(crate) fn zone(&self, id: u16) -> Option<&ZoneMap> {
        self.zones.get(&id)
    }

    /// The zone with monsters of the lowest level (where fighters go from town).
    pub(crate) fn easiest_combat_zone(&self) -> Option<u16> {
        self.zones
            .values()
            .filter_map(|z| z.min_monster_level.map(|l| (l, z.id)))
            .min()
            .map(|(_, id)| id)
    }
}

impl ZoneMap {
    pub(crate) fn new(
        id: u16,
        width: i32,
        height: i32,
        town: bool,
        walls: Vec<Rect>,
        portals: Vec<(Rect, u16)>,
        min_monster_level: Option<u8>,
    ) -> Self {
        let cols = (width + CELL_MM - 1) / CELL_MM;
        let rows = (height + CELL_MM - 1) / CELL_MM;
        let mut blocked = vec![false; (cols.max(0) * rows.max(0)) as usize];
        for r in 0..rows {
            for c in 0..cols {
                let cell = Rect::new(
                    c * CELL_MM - CLEARANCE_MM,
                    r * CELL_MM - CLEARANCE_MM,
                    (c + 1) * CELL_MM + CLEARANCE_MM,
                    (r + 1) * CELL_MM + CLEARANCE_MM,
                );
                let hit = walls
                    .iter()
                    .any(|w| w.x0 < cell.x1 && cell.x0 < w.x1 && w.y0 < cell.y1 && cell.y0 < w.y1);
                blocked[(r * cols + c) as usize] = hit;
            }
        }
        Self {
            id,
            width,
            height,
            town,
            walls,
            portals,
            min_monster_level,
            cols,
            rows,
            blocked,
        }
    }

    fn cell_of(&self, p: (i32, i32)) -> (i32, i32) {
        (
            (p.0 / CELL_MM).clamp(0, self.cols - 1),
            (p.1 / CELL_MM).clamp(0, self.rows - 1),
        )
    }

    fn free(&self, c: (i32, i32)) -> bool {
        c.0 >= 0
            && c.1 >= 0
            && c.0 < self.cols
            && c.1 < self.rows
            && !self.blocked[(c.1 * self.cols + c.0) as usize]
    }

    fn center(c: (i32, i32)) -> (i32, i32) {
        (c.0 * CELL_MM + CELL_MM / 2, c.1 * CELL_MM + CELL_MM / 2)
    }

    /// Whether walking straight from `a` to `b` keeps clear of walls.
    pub(crate) fn clear(&self, a: (i32, i32), b: (i32, i32)) -> bool {
        let dx = i64::from(b.0) - i64::from(a.0);
        let dy = i64::from(b.1) - i64::from(a.1);
        let len = ((dx * dx + dy * dy) as f64).sqrt() as i64;
        let n = len / SEGMENT_STEP_MM + 1;
        (0..=n).all(|i| {
            let p = (
                (i64::from(a.0) + dx * i / n) as i32,
                (i64::from(a.1) + dy * i / n) as i32,
            );
            !in_wall(p, &self.walls)
                && self
                    .walls
                    .iter()
                    .all(|w| !expanded(w, CLEARANCE_MM / 2).contains(p))
        })
    }

    /// Waypoints from `from` to `to` around walls (the last one is `to`), or `None` when no
    /// path exists on the grid. A straight line is returned when it is clear.
    pub(crate) fn path(&self, from: (i32, i32), to: (i32, i32)) -> Option<Vec<(i32, i32)>> {
        if self.clear(from, to) {
            return Some(vec![to]);
        }
        let start = self.nearest_free(self.cell_of(from))?;
        let goal = self.nearest_free(self.cell_of(to))?;
        let n = self.blocked.len();
        let mut prev = vec![u32::MAX; n];
        let idx = |c: (i32, i32)| (c.1 * self.cols + c.0) as usize;
        let mut queue = VecDeque::with_capacity(256);
        prev[idx(start)] = idx(start) as u32;
        queue.push_back(start);
        let mut found = false;
        while let Some(c) = queue.pop_front() {
            if c == goal {
                found = true;
                break;
            }
            for (dx, dy) in [
                (1, 0),
                (-1, 0),
                (0, 1),
                (0, -1),
                (1, 1),
                (1, -1),
                (-1, 1),
                (-1, -1),
            ] {
                let nc = (c.0 + dx, c.1 + dy);
                if !self.free(nc) || prev[idx(nc)] != u32::MAX {
                    continue;
                }
                // Diagonals only when both orthogonal neighbours are free (no corner cutting).
                if dx != 0 && dy != 0 && !(self.free((c.0 + dx, c.1)) && self.free((c.0, c.1 + dy)))
                {
                    continue;
                }
                prev[idx(nc)] = idx(c) as u32;
                queue.push_back(nc);
            }
        }
        if !found {
            return None;
        }
        let mut cells = vec![goal];
        let mut at = idx(goal);
        while prev[at] as usize != at {
            at = prev[at] as usize;
            cells.push(((at as i32) % self.cols, (at as i32) / self.cols));
        }
        cells.reverse();
        let mut points: Vec<(i32, i32)> = cells.into_iter().map(Self::center).collect();
        points.push(to);
        // Greedy smoothing, forward: from each kept point, go on while the next point is
        // in clear sight (linear in the number of points, one failed check per waypoint).
        let mut out = Vec::with_capacity(8);
        let mut cur = from;
        let mut i = 0;
        while i < points.len() {
            let mut j = i;
            while j + 1 < points.len() && self.clear(cur, points[j + 1]) {
                j += 1;
            }
            out.push(points[j]);
            cur = points[j];
            i = j + 1;
        }
        Some(out)
    }

    fn nearest_free(&self, c: (i32, i32)) -> Option<(i32, i32)> {
        if self.free(c) {
            return Some(c);
        }
        (1..self.cols.max(self.rows)).find_map(|r| {
            (-r..=r)
                .flat_map(|dx| (-r..=r).map(move |dy| (dx, dy)))
                .filter(|(dx, dy)| dx.abs() == r || dy.abs() == r)
                .map(|(dx, dy)| (c.0 + dx, c.1 + dy))
                .find(|&n| self.free(n))
        })
    }

    /// A portal leading to `target`, if any.
    pub(crate) fn portal_to(&self, target: u16) -> Option<Rect> {
        self.portals
            .iter()
            .find(|(_, t)| *t == target)
            .map(|(r, _)| *r)
    }

    /// Where to stand `gap` millimetres outside `portal`, and the unit axis step that walks
    /// into it (portals lie on zone edges; the step is axis-aligned so each full-speed input
    /// moves exactly 100 mm).
    pub(crate) fn portal_approach(&self, portal: Rect, gap: i32) -> ((i32, i32), (i16, i16)) {
        let (cx, cy) = portal.center();
        if portal.x0 <= 0 {
            ((portal.x1 + gap, cy), (-1000, 0))
        } else if portal.x1 >= self.width {
            ((portal.x0 - gap - 1, cy), (1000, 0))
        } else if portal.y0 <= 0 {
            ((cx, portal.y1 + gap), (0, -1000))
        } else if portal.y1 >= self.height {
            ((cx, portal.y0 - gap - 1), (0, 1000))
        } else {
            // An interior portal: approach from the left.
            ((portal.x0 - gap - 1, cy), (1000, 0))
        }
    }

    /// Where `cmd` moves a player standing at `p` in one tick (the server's integer rules).
    pub(crate) fn step(&self, p: (i32, i32), move_x: i16, move_y: i16) -> (i32, i32) {
        let (vx, vy) = velocity_mms(&PlayerInput {
            seq: 0,
            move_x,
            move_y,
            buttons: 0,
        });
        sweep(
            p,
            (step_mm(vx), step_mm(vy)),
            &self.walls,
            self.width,
            self.height,
        )
    }

    /// How many inputs of `axis` it takes from `p` until the player stands in `portal`
    /// (at most `limit`).
    pub(crate) fn steps_into(
        &self,
        p: (i32, i32),
        axis: (i16, i16),
        portal: Rect,
        limit: u32,
    ) -> Option<u32> {
        let mut q = p;
        for k in 1..=limit {
            let next = self.step(q, axis.0, axis.1);
            if next == q {
                return None;
            }
            q = next;
            if portal.contains(q) {
                return Some(k);
            }
        }
        None
    }

    /// A random walkable point near `center` (for wandering).
    pub(crate) fn is_walkable(&self, p: (i32, i32)) -> bool {
        p.0 >= 0
            && p.1 >= 0
            && p.0 <= self.width
            && p.1 <= self.height
            && self.free(self.cell_of(p))
    }
}

fn expanded(r: &Rect, by: i32) -> Rect {
    Rect::new(r.x0 - by, r.y0 - by, r.x1 + by, r.y1 + by)
}

/// The input axes that move from `from` toward `to` by at most `max_mm` this tick: full
/// speed far away, exactly the remaining distance close by (so bots stop where they aim).
pub(crate) fn axes_toward(from: (i32, i32), to: (i32, i32), max_mm: i32) -> (i16, i16) {
    let dx = f64::from(to.0) - f64::from(from.0);
    let dy = f64::from(to.1) - f64::from(from.1);
    let d = (dx * dx + dy * dy).sqrt();
    if d < 1.0 {
        return (0, 0);
    }
    // One full-speed input moves 100 mm; axis magnitude 10 per millimetre.
    let want = d.min(f64::from(max_mm.clamp(0, 100)));
    let mag = want * 10.0;
    let (x, y) = (dx / d * mag, dy / d * mag);
    (
        x.round().clamp(-1000.0, 1000.0) as i16,
        y.round().clamp(-1000.0, 1000.0) as i16,
    )
}

/// Distance between two points, millimetres.
pub(crate) fn dist(a: (i32, i32), b: (i32, i32)) -> i64 {
    let dx = i64::from(a.0) - i64::from(b.0);
    let dy = i64::from(a.1) - i64::from(b.1);
    ((dx * dx + dy * dy) as f64).sqrt() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn atlas() -> Atlas {
        Atlas::builtin()
    }

    #[test]
    fn content_directories_load_like_the_server_reads_them() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../content");
        let a = Atlas::from_dir(&dir).expect("content/zones");
        assert_eq!(a.zones.len(), Atlas::builtin().zones.len());
        assert!(Atlas::from_dir(std::path::Path::new("/nonexistent")).is_err());
    }

    #[test]
    fn builtin_zones_load_and_crypt_is_easiest() {
        let a = atlas();
        assert!(a.zone(1).is_some_and(|z| z.town));
        assert_eq!(a.easiest_combat_zone(), Some(2));
        let town = a.zone(1).expect("town");
        assert_eq!(
            town.portal_to(2),
            Some(Rect::new(38000, 18000, 40000, 22000))
        );
    }

    #[test]
    fn path_goes_around_the_crypt_wall() {
        let a = atlas();
        let crypt = a.zone(2).expect("crypt");
        // Spawn (3000, 30000) to the zombie area behind the wall at x 10000..11000.
        let from = (3000, 30000);
        let to = (15000, 10000);
        assert!(!crypt.clear(from, to));
        let path = crypt.path(from, to).expect("path");
        assert_eq!(path.last(), Some(&to));
        let mut cur = from;
        for p in &path {
            assert!(crypt.clear(cur, *p) || *p == to, "{cur:?} -> {p:?} blocked");
            cur = *p;
        }
        assert!(path.len() >= 2, "{path:?}");
    }

    #[test]
    fn walking_the_path_with_the_game_rules_arrives() {
        let a = atlas();
        let crypt = a.zone(2).expect("crypt");
        let to = (15000, 10000);
        let mut p = (3000, 30000);
        let path = crypt.path(p, to).expect("path");
        let mut i = 0;
        for _ in 0..2000 {
            if i == path.len() {
                break;
            }
            if dist(p, path[i]) < 50 {
                i += 1;
                continue;
            }
            let (x, y) = axes_toward(p, path[i], 100);
            p = crypt.step(p, x, y);
        }
        assert!(dist(p, to) < 50, "stuck at {p:?}");
    }

    #[test]
    fn portal_steps_are_exact() {
        let a = atlas();
        let town = a.zone(1).expect("town");
        let portal = town.portal_to(2).expect("portal");
        let (stand, axis) = town.portal_approach(portal, 300);
        assert!(!portal.contains(stand));
        assert_eq!(axis, (1000, 0));
        assert_eq!(town.steps_into(stand, axis, portal, 50), Some(4));
        assert_eq!(town.steps_into((37_700, 20_000), axis, portal, 50), Some(3));
    }

    #[test]
    fn axes_stop_exactly() {
        assert_eq!(axes_toward((0, 0), (30, 0), 100), (300, 0));
        assert_eq!(axes_toward((0, 0), (1000, 0), 100), (1000, 0));
        assert_eq!(axes_toward((5, 5), (5, 5), 100), (0, 0));
        let town = atlas().zone(1).cloned().expect("town");
        assert_eq!(town.step((20_000, 20_000), 300, 0), (20_030, 20_000));
    }

    proptest! {
        #[test]
        fn paths_avoid_walls(sx in 0i32..80_000, sy in 0i32..80_000, tx in 0i32..80_000, ty in 0i32..80_000) {
            let a = atlas();
            let marsh = a.zone(3).expect("marsh");
            prop_assume!(marsh.is_walkable((sx, sy)) && marsh.is_walkable((tx, ty)));
            if let Some(path) = marsh.path((sx, sy), (tx, ty)) {
                prop_assert!(path.len() < 200);
                prop_assert_eq!(path.last().copied(), Some((tx, ty)));
                for p in &path[..path.len() - 1] {
                    prop_assert!(!in_wall(*p, &marsh.walls));
                }
            }
        }
    }
}
