//! Server-authoritative movement: inputs applied in sequence, speed limit, zone bounds.

/// Simulation ticks per second; every rule assumes this fixed timestep.
pub const TICK_HZ: u32 = 60;
/// Player speed limit in millimetres per second.
pub const MAX_SPEED_MMS: u32 = 6000;
/// Full-speed magnitude of an input axis.
pub const AXIS_MAX: i32 = 1000;
/// Inputs a player may bank while none arrive (absorbs network jitter without letting a
/// client move faster than the limit for more than this many extra ticks).
pub const MAX_BANKED_INPUTS: u32 = 4;
/// Inputs applied in one tick at most, however many are banked: a full bank is spent over
/// several ticks, so no tick moves a player more than this many full-speed steps
/// (`2 × 100` mm, i.e. 12 000 mm/s for one tick) while the average stays capped by the bank.
pub const MAX_INPUTS_PER_TICK: u32 = 2;
/// How far ahead of the last applied input a sequence may be (SPEC §4.2): an input whose
/// sequence exceeds `last applied + MAX_INPUT_SEQ_AHEAD` is ignored. Sequences do not wrap;
/// without this window one input numbered near `u32::MAX` would make every later input
/// count as already applied. 65 536 inputs are 18 minutes at 60 Hz, far more than a
/// connection can lose before its idle timeout.
pub const MAX_INPUT_SEQ_AHEAD: u32 = 1 << 16;
/// Button bit: attack (same bit as the protocol's `BUTTON_ATTACK`).
pub const BUTTON_ATTACK: u16 = 1 << 0;
/// Inputs that may wait beyond the current budget (0: none). A client whose clock runs fast
/// (or that resends inputs after a zone change) would otherwise build a standing queue that
/// delays every later input; the oldest inputs beyond this slack are skipped instead:
/// acknowledged as applied without moving, so the speed limit still holds.
pub const QUEUE_SLACK: usize = 0;
/// Inputs buffered per player awaiting application; older ones are dropped beyond this.
pub const MAX_QUEUED_INPUTS: usize = 16;

/// One tick's intent of a player.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PlayerInput {
    /// Sequence number assigned by the client; applied in increasing order.
    pub seq: u32,
    /// Movement along x in thousandths of full speed, -1000..=1000.
    pub move_x: i16,
    /// Movement along y in thousandths of full speed, -1000..=1000.
    pub move_y: i16,
    /// Button bits.
    pub buttons: u16,
}

/// Velocity in millimetres per second for an input: the axis vector, clamped to unit
/// length, times [`MAX_SPEED_MMS`]. Integer arithmetic keeps it deterministic.
pub fn velocity_mms(input: &PlayerInput) -> (i32, i32) {
    let x = i64::from(input.move_x.clamp(-1000, 1000));
    let y = i64::from(input.move_y.clamp(-1000, 1000));
    let len_sq = x * x + y * y;
    let max = i64::from(AXIS_MAX);
    let speed = i64::from(MAX_SPEED_MMS);
    if len_sq <= max * max {
        ((x * speed / max) as i32, (y * speed / max) as i32)
    } else {
        let len = (len_sq as f64).sqrt().ceil() as i64;
        ((x * speed / len) as i32, (y * speed / len) as i32)
    }
}

/// Displacement in millimetres of one tick at velocity `v` (mm/s), rounded toward zero.
pub fn step_mm(v: i32) -> i32 {
    v / TICK_HZ as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_faster_than_limit(x in any::<i16>(), y in any::<i16>()) {
            let (vx, vy) = velocity_mms(&PlayerInput { seq: 1, move_x: x, move_y: y, buttons: 0 });
            let speed = ((f64::from(vx)).powi(2) + f64::from(vy).powi(2)).sqrt();
            prop_assert!(speed <= f64::from(MAX_SPEED_MMS) + 1.0, "speed {speed}");
        }
    }

    #[test]
    fn full_axis_is_full_speed() {
        assert_eq!(
            velocity_mms(&PlayerInput {
                move_x: 1000,
                ..Default::default()
            }),
            (6000, 0)
        );
        assert_eq!(step_mm(6000), 100);
    }
}
