//! Unit tests of the store's types, config, report and party rules.

use std::path::{Path, PathBuf};

use super::*;

#[test]
fn fences_order_lexicographically() {
    let f = |epoch, seq| Fence { epoch, seq };
    assert!(f(1, 9) < f(2, 0));
    assert!(f(2, 1) > f(2, 0));
    assert_eq!(f(3, 3), f(3, 3));
}

#[test]
fn owner_keys_round_trip() {
    for o in [
        Owner::Player(0),
        Owner::Player(u64::MAX),
        Owner::Ground { instance: 7 },
        Owner::Trade { trade: u64::MAX },
    ] {
        assert_eq!(Owner::from_key(&o.to_key()), Some(o));
    }
    for bad in ["", "player", "player:", "player:-1", "x:1", "ground:1:2"] {
        assert_eq!(Owner::from_key(bad), None, "{bad}");
    }
}

#[test]
fn default_config_is_valid_and_round_trips_through_toml() {
    let c = StoreConfig::default();
    c.validate().expect("valid");
    let text = toml::to_string(&c).expect("serialize");
    let back: StoreConfig = toml::from_str(&text).expect("parse");
    assert_eq!(back, c);
    let scylla: StoreConfig = toml::from_str(
        "cache_capacity = 5\n[backend]\nkind = \"scylla\"\nuri = \"10.0.0.1:9042\"\n",
    )
    .expect("parse scylla");
    assert!(matches!(scylla.backend, BackendConfig::Scylla(_)));
    assert_eq!(scylla.cache_capacity, 5);
    assert_eq!(
        c.embedded_path(Path::new("/data")),
        Some(PathBuf::from("/data/store.redb"))
    );
}

#[test]
fn report_display_names_anomalies() {
    let mut r = IntegrityReport {
        backend: "embedded".into(),
        items: 2,
        ..Default::default()
    };
    assert!(r.to_string().contains("OK"));
    r.anomalies.push(Anomaly::DuplicateOwner {
        item_id: 1,
        owner: Owner::Player(1),
        also: vec![Owner::Player(2)],
    });
    // The embedded store writes its index in the item's transaction: a fault.
    let text = r.to_string();
    assert!(!r.is_clean(), "{text}");
    assert!(text.contains("FAILED: 1"), "{text}");
    // A backend that writes it apart (ScyllaDB): a stale entry, listed, not a fault.
    r.index_written_apart = true;
    let text = r.to_string();
    assert!(r.is_clean(), "a stale index entry is not a fault");
    assert!(text.contains("stale index entries 1"), "{text}");
    assert!(text.contains("player:2"), "{text}");
    assert!(text.contains("OK"), "{text}");
    r.anomalies.push(Anomaly::MissingIndexEntry {
        item_id: 2,
        owner: Owner::Player(3),
    });
    let text = r.to_string();
    assert!(!r.is_clean());
    assert!(text.contains("FAILED: 1"), "{text}");
    assert!(text.contains("player:3"), "{text}");
}

#[test]
fn invitations_are_checked_against_their_party_and_clock() {
    let party = PartyRecord {
        party_id: 9,
        leader: 1,
        members: vec![1],
        invites: vec![2],
        version: 1,
    };
    let inv = Invitation {
        party_id: 9,
        invitee: 2,
        expires_at_ms: 1000,
    };
    assert!(check_invitation(&party, &inv, 999).is_ok());
    assert!(check_invitation(&party, &inv, 1000).is_err(), "expired");
    for bad in [
        Invitation { party_id: 8, ..inv },
        Invitation { invitee: 3, ..inv },
        Invitation { invitee: 1, ..inv },
    ] {
        let mut p = party.clone();
        p.invites.push(1);
        assert!(check_invitation(&p, &bad, 0).is_err(), "{bad:?}");
    }
    assert_eq!(pending_invitation(inv, Some(&party), 999), Some(inv));
    assert_eq!(pending_invitation(inv, Some(&party), 1000), None);
    assert_eq!(pending_invitation(inv, None, 0), None);
    let answered = PartyRecord {
        members: vec![1, 2],
        invites: vec![],
        ..party.clone()
    };
    assert_eq!(pending_invitation(inv, Some(&answered), 0), None);
    let other = PartyRecord {
        party_id: 10,
        ..party
    };
    assert_eq!(pending_invitation(inv, Some(&other), 0), None);
}
