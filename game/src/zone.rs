//! The static description of a zone that a [`World`](crate::World) runs
//! ([`ZoneTemplate::spec`](crate::ZoneTemplate::spec)). A leaf shared by content and world.

/// Static description of a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSpec {
    /// Zone template id.
    pub id: u16,
    /// Width in millimetres (x runs 0..width).
    pub width_mm: i32,
    /// Height in millimetres (y runs 0..height).
    pub height_mm: i32,
    /// Where players appear, in millimetres.
    pub spawn_mm: (i32, i32),
}
