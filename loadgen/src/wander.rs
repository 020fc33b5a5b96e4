//! The movers' random walk: a direction held for 0.5..2 s, sometimes standing still.

use std::f32::consts::TAU;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg32;
use zonehost_protocol::datagram::{InputCmd, MOVE_AXIS_MAX};

/// Random walk, seeded per bot.
#[derive(Debug)]
pub(crate) struct Wander {
    rng: Pcg32,
    cmd: InputCmd,
    left: u32,
    hz: u32,
}

impl Wander {
    pub(crate) fn new(seed: u64, index: usize, hz: u32) -> Self {
        let stream = seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Self {
            rng: Pcg32::seed_from_u64(stream),
            cmd: InputCmd::default(),
            left: 0,
            hz: hz.max(2),
        }
    }

    pub(crate) fn next_cmd(&mut self) -> InputCmd {
        if self.left == 0 {
            self.left = self.rng.random_range(self.hz / 2..=self.hz * 2);
            self.cmd = if self.rng.random_range(0..10) == 0 {
                InputCmd::default()
            } else {
                self.random_cmd()
            };
        }
        self.left -= 1;
        self.cmd
    }

    /// A full-speed step in a random direction.
    pub(crate) fn random_cmd(&mut self) -> InputCmd {
        let angle = self.rng.random::<f32>() * TAU;
        let axis = f32::from(MOVE_AXIS_MAX);
        InputCmd::new(
            (angle.cos() * axis).round() as i16,
            (angle.sin() * axis).round() as i16,
            0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wander_is_seeded_and_bounded() {
        let a: Vec<InputCmd> = {
            let mut w = Wander::new(1, 3, 60);
            (0..600).map(|_| w.next_cmd()).collect()
        };
        let b: Vec<InputCmd> = {
            let mut w = Wander::new(1, 3, 60);
            (0..600).map(|_| w.next_cmd()).collect()
        };
        let c: Vec<InputCmd> = {
            let mut w = Wander::new(1, 4, 60);
            (0..600).map(|_| w.next_cmd()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        let distinct: std::collections::HashSet<(i16, i16)> =
            a.iter().map(|c| (c.move_x.get(), c.move_y.get())).collect();
        assert!(distinct.len() >= 3, "changes direction: {distinct:?}");
        for cmd in &a {
            let (x, y) = (i32::from(cmd.move_x.get()), i32::from(cmd.move_y.get()));
            assert!(x.abs() <= 1000 && y.abs() <= 1000);
            assert!(x * x + y * y <= 1_002_000, "unit direction at most");
        }
    }
}
