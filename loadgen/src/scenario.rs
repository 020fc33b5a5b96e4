//! Scenarios: a run described in TOML, either a file or one of the built-in ones
//! (`smoke`, `1k-mixed`, `soak`, `churn`, shipped in `loadgen/scenarios/`). Every key is
//! optional; what a scenario leaves out keeps its default, and command-line flags override
//! the scenario.
//!
//! ```toml
//! name = "my-test"
//! players = 200
//! duration = "60s"
//! ramp_up = "10s"
//! input_hz = 60
//! seed = 1
//! sockets = 4
//! think_time = "500ms..2s"   # pause after non-combat actions
//! view_hz = 10               # snapshots per second a navigating bot looks into
//! slo = "p99<100ms,failures=0"
//!
//! [mix]                      # relative weights
//! mover = 40
//! fighter = 30
//! looter = 10
//! hopper = 5
//! party = 8                  # groups of up to 4
//! churner = 5
//! idler = 2
//!
//! [churn]
//! session = "10s..30s"       # connected time
//! pause = "1s..3s"           # away time
//!
//! [party]
//! stay = "20s..40s"          # a member's time in a party before leaving
//! trade_every = "15s"        # leaders trade potions with a member this often (default: never)
//!
//! [impair.up]                # client -> server
//! latency = "50ms"
//! jitter = "10ms"
//! loss = 0.02
//! reorder = 0.0
//! [impair.down]              # server -> client, same keys
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use zonehost_client::Direction;

use crate::behaviour::{Behaviour, Mix};
use crate::config::{parse_duration, parse_range, Config};
use crate::error::Error;

/// The built-in scenarios, by name.
pub const BUILTIN: &[(&str, &str)] = &[
    ("smoke", include_str!("../scenarios/smoke.toml")),
    ("1k-mixed", include_str!("../scenarios/1k-mixed.toml")),
    ("soak", include_str!("../scenarios/soak.toml")),
    ("churn", include_str!("../scenarios/churn.toml")),
    ("trade", include_str!("../scenarios/trade.toml")),
];

/// A scenario file's content.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name shown in the report.
    pub name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Bots.
    pub players: Option<usize>,
    /// Total run time (`30s`, `2m`).
    pub duration: Option<String>,
    /// Connect ramp.
    pub ramp_up: Option<String>,
    /// Inputs per second per bot.
    pub input_hz: Option<u32>,
    /// Seed.
    pub seed: Option<u64>,
    /// Client sockets.
    pub sockets: Option<usize>,
    /// Think-time range (`500ms..2s`).
    pub think_time: Option<String>,
    /// Snapshots a navigating bot looks into per second.
    pub view_hz: Option<u32>,
    /// Objectives (see [`crate::slo`]).
    pub slo: Option<String>,
    /// Behaviour weights.
    pub mix: Option<BTreeMap<String, u32>>,
    /// Churner timing.
    pub churn: Option<ChurnSection>,
    /// Party timing.
    pub party: Option<PartySection>,
    /// Network impairment.
    pub impair: Option<ImpairSection>,
}

/// `[churn]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChurnSection {
    /// Connected time range.
    pub session: Option<String>,
    /// Away time range.
    pub pause: Option<String>,
}

/// `[party]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartySection {
    /// A member's time in a party.
    pub stay: Option<String>,
    /// How often a leader opens a trade.
    pub trade_every: Option<String>,
}

/// `[impair]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpairSection {
    /// Client → server.
    pub up: Option<DirectionSection>,
    /// Server → client.
    pub down: Option<DirectionSection>,
}

/// `[impair.up]` / `[impair.down]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionSection {
    /// Added delay.
    pub latency: Option<String>,
    /// ± this much, uniformly.
    pub jitter: Option<String>,
    /// Drop probability.
    pub loss: Option<f64>,
    /// Hold-back probability.
    pub reorder: Option<f64>,
}

impl DirectionSection {
    fn apply(&self, d: &mut Direction) -> Result<(), String> {
        if let Some(l) = &self.latency {
            d.latency = parse_duration(l)?;
        }
        if let Some(j) = &self.jitter {
            d.jitter = parse_duration(j)?;
        }
        if let Some(p) = self.loss {
            d.loss = p;
        }
        if let Some(p) = self.reorder {
            d.reorder = p;
        }
        Ok(())
    }
}

impl Scenario {
    /// Parses scenario TOML.
    pub fn from_toml(text: &str) -> Result<Scenario, Error> {
        toml::from_str(text).map_err(|e| Error::Config(format!("scenario: {e}")))
    }

    /// A built-in scenario by name, or a file.
    pub fn load(name_or_path: &str) -> Result<Scenario, Error> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Self::from_toml(text);
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound && !name_or_path.contains(['/', '.']) {
                Error::Config(format!(
                    "no scenario {name_or_path:?} (built-in: {})",
                    BUILTIN
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            } else {
                Error::File {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        let mut s = Self::from_toml(&text)?;
        if s.name.is_none() {
            s.name = path.file_stem().map(|n| n.to_string_lossy().into_owned());
        }
        Ok(s)
    }

    /// Writes what the scenario sets into `c`.
    pub fn apply(&self, c: &mut Config) -> Result<(), Error> {
        let e = |what: &str, m: String| Error::Config(format!("scenario {what}: {m}"));
        c.scenario = self.name.clone().or_else(|| Some("unnamed".into()));
        if let Some(p) = self.players {
            c.players = p;
        }
        if let Some(d) = &self.duration {
            c.duration = parse_duration(d).map_err(|m| e("duration", m))?;
        }
        if let Some(d) = &self.ramp_up {
            c.ramp_up = parse_duration(d).map_err(|m| e("ramp_up", m))?;
        }
        if let Some(h) = self.input_hz {
            c.input_hz = h;
        }
        if let Some(s) = self.seed {
            c.seed = s;
        }
        if let Some(s) = self.sockets {
            c.sockets = s;
        }
        if let Some(t) = &self.think_time {
            c.think = parse_range(t).map_err(|m| e("think_time", m))?;
        }
        if let Some(v) = self.view_hz {
            c.view_hz = v;
        }
        if let Some(s) = &self.slo {
            c.slo = crate::slo::parse(s).map_err(|m| e("slo", m))?;
        }
        if let Some(mix) = &self.mix {
            let mut m = BTreeMap::new();
            for (name, w) in mix {
                let b: Behaviour = name.parse().map_err(|m| e("mix", m))?;
                m.insert(b, *w);
            }
            c.mix = Mix(m);
        }
        if let Some(ch) = &self.churn {
            if let Some(s) = &ch.session {
                c.churn_session = parse_range(s).map_err(|m| e("churn.session", m))?;
            }
            if let Some(p) = &ch.pause {
                c.churn_pause = parse_range(p).map_err(|m| e("churn.pause", m))?;
            }
        }
        if let Some(p) = &self.party {
            if let Some(s) = &p.stay {
                c.party_stay = parse_range(s).map_err(|m| e("party.stay", m))?;
            }
            if let Some(t) = &p.trade_every {
                c.party_trade_every =
                    Some(parse_duration(t).map_err(|m| e("party.trade_every", m))?);
            }
        }
        if let Some(i) = &self.impair {
            if let Some(up) = &i.up {
                up.apply(&mut c.impair.up).map_err(|m| e("impair.up", m))?;
            }
            if let Some(down) = &i.down {
                down.apply(&mut c.impair.down)
                    .map_err(|m| e("impair.down", m))?;
            }
        }
        Ok(())
    }
}

/// The longest a built-in scenario runs (for documentation checks).
pub fn builtin_duration(name: &str) -> Option<Duration> {
    let s = Scenario::load(name).ok()?;
    parse_duration(s.duration.as_deref()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zonehost_client::Trust;

    fn config() -> Config {
        Config::new(
            "127.0.0.1:25000".parse().expect("addr"),
            Trust::Fingerprint([0; 32]),
            crate::TokenSource::Command("echo t".into()),
        )
    }

    #[test]
    fn builtins_parse_apply_and_validate() {
        for (name, _) in BUILTIN {
            let s = Scenario::load(name).expect(name);
            assert_eq!(s.name.as_deref(), Some(*name));
            let mut c = config();
            s.apply(&mut c).expect(name);
            c.validate().expect(name);
            assert!(!c.slo.is_empty(), "{name} has objectives");
        }
        let mut c = config();
        Scenario::load("1k-mixed")
            .expect("1k")
            .apply(&mut c)
            .expect("apply");
        assert_eq!(c.players, 1000);
        assert_eq!(c.input_hz, 30);
        assert_eq!(c.mix.counts(1000)[&Behaviour::Mover], 400);
        assert_eq!(builtin_duration("soak"), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn files_and_impairment() {
        let s = Scenario::from_toml(
            r#"
            players = 3
            think_time = "1s..2s"
            [mix]
            fighters = 2
            [impair.up]
            latency = "50ms"
            jitter = "10ms"
            loss = 0.02
            [impair.down]
            loss = 0.02
            "#,
        )
        .expect("parse");
        let mut c = config();
        s.apply(&mut c).expect("apply");
        assert_eq!(c.players, 3);
        assert_eq!(c.impair.up.latency, Duration::from_millis(50));
        assert_eq!(c.impair.down.loss, 0.02);
        assert_eq!(c.mix.describe(), "fighter=2");
        assert_eq!(c.think, (Duration::from_secs(1), Duration::from_secs(2)));
        assert!(
            Scenario::from_toml("players = 1\nbogus = 2").is_err(),
            "unknown keys are errors"
        );
        assert!(Scenario::load("no-such-scenario").is_err());
        let bad = Scenario::from_toml("[mix]\ndancer = 1").expect("parse");
        assert!(bad.apply(&mut config()).is_err());
    }
}
