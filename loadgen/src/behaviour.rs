//! What bots do: [`Behaviour`], the weighted [`Mix`] of a run, and the deterministic
//! assignment of behaviours and party groups to bot indices.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_pcg::Pcg32;
use serde::{Deserialize, Serialize};

/// Largest party the game allows (game/RULES.md `MAX_PARTY_SIZE`).
pub const MAX_PARTY: usize = 4;

/// One kind of bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// Random walk on the fixed input schedule (the original loadgen bot).
    Mover,
    /// Walks to the nearest monster seen in snapshots and attacks it; fights back and
    /// drinks a potion when hurt.
    Fighter,
    /// A fighter that also picks up its loot, equips better items and drops junk (and
    /// drops and picks up a potion now and then).
    Looter,
    /// Walks into portals, waits for the zone change, and does it again.
    Hopper,
    /// Fighters grouped up to four: the first invites, the others accept and later leave.
    Party,
    /// A mover that says `Bye` after a while and logs in again with a fresh token.
    Churner,
    /// Connected, reading snapshots, sending nothing.
    Idler,
}

impl Behaviour {
    /// Every behaviour, in report order.
    pub const ALL: [Behaviour; 7] = [
        Behaviour::Mover,
        Behaviour::Fighter,
        Behaviour::Looter,
        Behaviour::Hopper,
        Behaviour::Party,
        Behaviour::Churner,
        Behaviour::Idler,
    ];

    /// The scenario/flag name.
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Mover => "mover",
            Behaviour::Fighter => "fighter",
            Behaviour::Looter => "looter",
            Behaviour::Hopper => "hopper",
            Behaviour::Party => "party",
            Behaviour::Churner => "churner",
            Behaviour::Idler => "idler",
        }
    }

    /// Whether the bot sends movement inputs.
    pub fn sends_inputs(self) -> bool {
        self != Behaviour::Idler
    }

    /// Whether the bot walks with a goal (and so reads its surroundings from snapshots).
    pub fn navigates(self) -> bool {
        matches!(
            self,
            Behaviour::Fighter | Behaviour::Looter | Behaviour::Hopper | Behaviour::Party
        )
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Behaviour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_end_matches('s');
        Behaviour::ALL
            .into_iter()
            .find(|b| b.name() == s || (s == "zone_hopper" && *b == Behaviour::Hopper))
            .ok_or_else(|| {
                format!(
                    "unknown behaviour {s:?} (one of: {})",
                    Behaviour::ALL.map(|b| b.name()).join(", ")
                )
            })
    }
}

/// Relative weights of behaviours. The default is all movers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mix(pub BTreeMap<Behaviour, u32>);

impl Default for Mix {
    fn default() -> Self {
        Mix(BTreeMap::from([(Behaviour::Mover, 1)]))
    }
}

impl Mix {
    /// Parses `mover=40,fighter=30,looter=10` (weights are relative; zero is allowed).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut m = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .or_else(|| part.split_once(':'))
                .ok_or_else(|| format!("{part:?}: expected name=weight"))?;
            let b: Behaviour = name.parse()?;
            let w: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: weight must be a whole number"))?;
            m.insert(b, w);
        }
        let mix = Mix(m);
        mix.validate()?;
        Ok(mix)
    }

    /// At least one positive weight.
    pub fn validate(&self) -> Result<(), String> {
        if self.0.values().all(|w| *w == 0) {
            return Err("the behaviour mix needs at least one positive weight".into());
        }
        Ok(())
    }

    /// Exact counts for `players` bots (largest remainder: counts sum to `players` and are
    /// within one of `players * weight / total`).
    pub fn counts(&self, players: usize) -> BTreeMap<Behaviour, usize> {
        let total: u64 = self.0.values().map(|w| u64::from(*w)).sum();
        let mut out = BTreeMap::new();
        if total == 0 {
            return out;
        }
        let mut rem = Vec::new();
        let mut given = 0usize;
        for (b, w) in &self.0 {
            let exact = players as u64 * u64::from(*w);
            let n = (exact / total) as usize;
            given += n;
            out.insert(*b, n);
            rem.push((exact % total, *b));
        }
        // Largest remainders first; ties in behaviour order (stable, reproducible).
        rem.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, b) in rem.into_iter().take(players - given) {
            *out.entry(b).or_insert(0) += 1;
        }
        out
    }

    /// Compact text form (`mover=40,fighter=30`).
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .filter(|(_, w)| **w > 0)
            .map(|(b, w)| format!("{b}={w}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A bot's place in a party group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PartyRole {
    /// Invites the others (bot indices).
    Leader { members: Vec<usize> },
    /// Accepts the leader's invites.
    Member { leader: usize },
}

/// The behaviour of every bot index, shuffled by `seed` (same seed, same assignment),
/// and the party role of each party bot (consecutive party bots form groups of up to
/// [`MAX_PARTY`]; a lone last one still tries to invite nobody and fights).
pub(crate) fn assign(
    mix: &Mix,
    players: usize,
    seed: u64,
) -> (Vec<Behaviour>, Vec<Option<PartyRole>>) {
    let mut list: Vec<Behaviour> = mix
        .counts(players)
        .into_iter()
        .flat_map(|(b, n)| std::iter::repeat_n(b, n))
        .collect();
    let mut rng = Pcg32::seed_from_u64(seed ^ 0x6265_6861_7669_6f75);
    list.shuffle(&mut rng);
    let party: Vec<usize> = (0..players)
        .filter(|i| list[*i] == Behaviour::Party)
        .collect();
    let mut roles = vec![None; players];
    for group in party.chunks(MAX_PARTY) {
        let leader = group[0];
        roles[leader] = Some(PartyRole::Leader {
            members: group[1..].to_vec(),
        });
        for m in &group[1..] {
            roles[*m] = Some(PartyRole::Member { leader });
        }
    }
    (list, roles)
}

/// Which of `servers` servers bot `index` connects to: bots in turn, except that a party
/// group goes to its leader's server (a party plays together on one server) unless
/// `spread_parties`.
pub(crate) fn server_of(
    index: usize,
    roles: &[Option<PartyRole>],
    servers: usize,
    spread_parties: bool,
) -> usize {
    let anchor = match roles.get(index) {
        Some(Some(PartyRole::Member { leader })) if !spread_parties => *leader,
        _ => index,
    };
    anchor % servers.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_and_describe() {
        let m = Mix::parse("mover=40, fighters=30,looter:10,idler=0").expect("mix");
        assert_eq!(m.0[&Behaviour::Fighter], 30);
        assert_eq!(m.describe(), "mover=40,fighter=30,looter=10");
        assert!(Mix::parse("mover=x").is_err());
        assert!(Mix::parse("dancer=1").is_err());
        assert!(Mix::parse("mover=0").is_err());
        assert_eq!("zone_hopper".parse::<Behaviour>(), Ok(Behaviour::Hopper));
    }

    #[test]
    fn default_is_all_movers() {
        let (list, roles) = assign(&Mix::default(), 7, 1);
        assert!(list.iter().all(|b| *b == Behaviour::Mover));
        assert!(roles.iter().all(Option::is_none));
    }

    #[test]
    fn parties_are_groups_of_four_at_most() {
        let mix = Mix::parse("party=1").expect("mix");
        let (_, roles) = assign(&mix, 10, 3);
        let leaders: Vec<_> = roles
            .iter()
            .filter_map(|r| match r {
                Some(PartyRole::Leader { members }) => Some(members.len()),
                _ => None,
            })
            .collect();
        assert_eq!(leaders, vec![3, 3, 1]);
        for (i, r) in roles.iter().enumerate() {
            if let Some(PartyRole::Member { leader }) = r {
                assert!(
                    matches!(&roles[*leader], Some(PartyRole::Leader { members }) if members.contains(&i))
                );
            }
        }
    }

    proptest! {
        #[test]
        fn counts_are_exact_and_fair(ws in prop::collection::vec(0u32..100, 7), players in 0usize..3000, seed in any::<u64>()) {
            let mix = Mix(Behaviour::ALL.into_iter().zip(ws.iter().copied()).collect());
            prop_assume!(mix.validate().is_ok());
            let counts = mix.counts(players);
            prop_assert_eq!(counts.values().sum::<usize>(), players);
            let total: u32 = ws.iter().sum();
            for (b, w) in &mix.0 {
                let ideal = players as f64 * f64::from(*w) / f64::from(total);
                let got = counts.get(b).copied().unwrap_or(0) as f64;
                prop_assert!((got - ideal).abs() < 1.0 + 1e-9, "{b}: {got} vs {ideal}");
            }
            let (a, _) = assign(&mix, players, seed);
            let (b, _) = assign(&mix, players, seed);
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn bots_are_spread_over_servers_and_parties_stay_together() {
        let mix = Mix::parse("mover=50,party=50").expect("mix");
        let (_, roles) = assign(&mix, 40, 7);
        let mut per_server = [0usize; 3];
        for i in 0..40 {
            let s = server_of(i, &roles, 3, false);
            per_server[s] += 1;
            match &roles[i] {
                Some(PartyRole::Member { leader }) => {
                    assert_eq!(
                        s,
                        server_of(*leader, &roles, 3, false),
                        "bot {i} away from its leader"
                    )
                }
                Some(PartyRole::Leader { members }) => {
                    for m in members {
                        assert_eq!(server_of(*m, &roles, 3, false), s);
                    }
                }
                None => assert_eq!(s, i % 3),
            }
        }
        assert!(per_server.iter().all(|n| *n >= 5), "{per_server:?}");
        assert_eq!(server_of(5, &roles, 1, false), 0);
    }

    #[test]
    fn spread_parties_puts_members_in_turn() {
        let mix = Mix::parse("party=100").expect("mix");
        let (_, roles) = assign(&mix, 12, 7);
        assert!((0..12).all(|i| server_of(i, &roles, 3, true) == i % 3));
        // Some member starts away from its leader: the cluster has to bring it over.
        assert!((0..12).any(|i| matches!(&roles[i],
            Some(PartyRole::Member { leader }) if server_of(*leader, &roles, 3, true) != i % 3)));
    }
}
