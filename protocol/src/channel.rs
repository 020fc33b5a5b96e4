//! The channel table: which message kind rides which QUIC channel, declared as data.

/// A QUIC transport channel used by the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Unreliable, unordered QUIC DATAGRAM frames (RFC 9221). Loss is expected.
    Datagram,
    /// The single bidirectional control stream opened by the client; reliable and ordered.
    Control,
}

/// What a message kind is and where it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelSpec {
    /// Message kind name as used in SPEC.md.
    pub kind: &'static str,
    /// Channel it rides.
    pub channel: Channel,
    /// Direction: `true` when sent by the client.
    pub from_client: bool,
}

/// Every message kind of protocol v1 and its channel.
pub const CHANNELS: &[ChannelSpec] = &[
    ChannelSpec {
        kind: "Input",
        channel: Channel::Datagram,
        from_client: true,
    },
    ChannelSpec {
        kind: "Snapshot",
        channel: Channel::Datagram,
        from_client: false,
    },
    ChannelSpec {
        kind: "Hello",
        channel: Channel::Control,
        from_client: true,
    },
    ChannelSpec {
        kind: "Request",
        channel: Channel::Control,
        from_client: true,
    },
    ChannelSpec {
        kind: "Bye",
        channel: Channel::Control,
        from_client: true,
    },
    ChannelSpec {
        kind: "Welcome",
        channel: Channel::Control,
        from_client: false,
    },
    ChannelSpec {
        kind: "Reject",
        channel: Channel::Control,
        from_client: false,
    },
    ChannelSpec {
        kind: "Response",
        channel: Channel::Control,
        from_client: false,
    },
    ChannelSpec {
        kind: "Event",
        channel: Channel::Control,
        from_client: false,
    },
    ChannelSpec {
        kind: "Goaway",
        channel: Channel::Control,
        from_client: false,
    },
    ChannelSpec {
        kind: "Redirect",
        channel: Channel::Control,
        from_client: false,
    },
];

/// Looks up the channel of a message kind by name.
pub fn channel_of(kind: &str) -> Option<Channel> {
    CHANNELS.iter().find(|c| c.kind == kind).map(|c| c.channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn movement_is_unreliable_and_handshake_reliable() {
        assert_eq!(channel_of("Input"), Some(Channel::Datagram));
        assert_eq!(channel_of("Snapshot"), Some(Channel::Datagram));
        assert_eq!(channel_of("Hello"), Some(Channel::Control));
        assert_eq!(channel_of("Nope"), None);
    }
}
