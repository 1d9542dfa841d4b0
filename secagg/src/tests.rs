//! Whole-round tests of SecAgg+ neighbourhoods, and golden transcripts of
//! the later rounds.

use std::collections::BTreeSet;

use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::{Client, Config, Dropouts, Error, Graph, PartyId, Server, SessionId, Unmask, harary_parameters, simulate};

/// `n` random vectors of `dim` entries, small enough that sums of up to
/// 256 of them do not wrap.
pub(crate) fn inputs(n: u32, dim: usize, rng: &mut ChaCha20Rng) -> Vec<Vec<u32>> {
    (0..n).map(|_| (0..dim).map(|_| rng.next_u32() >> 8).collect()).collect()
}

/// The plain sum of the vectors of parties `who` (ids from 1).
pub(crate) fn plain_sum(inputs: &[Vec<u32>], who: &[PartyId]) -> Vec<u32> {
    let mut sum = vec![0u32; inputs[0].len()];
    for &p in who {
        for (s, x) in sum.iter_mut().zip(&inputs[p as usize - 1]) {
            *s = s.wrapping_add(*x);
        }
    }
    sum
}

/// What the round must produce, worked out from the graph alone: the
/// contributors, or `None` where some count falls below the threshold.
/// Written independently of the state machines, from the protocol's rules.
fn model(config: &Config, d: &Dropouts) -> Option<Vec<PartyId>> {
    let t = config.threshold as usize;
    let near: Vec<BTreeSet<PartyId>> = (0..=config.n).map(|u| config.neighbours(u).into_iter().collect()).collect();
    let count = |u: PartyId, set: &BTreeSet<PartyId>, with_self: bool| {
        near[u as usize].intersection(set).count() + usize::from(with_self && set.contains(&u))
    };
    let all: BTreeSet<PartyId> = (1..=config.n).collect();
    let advertised: BTreeSet<PartyId> = all.difference(&d.before_advertise).copied().collect();
    if advertised.len() < t {
        return None;
    }
    // A client with fewer than t holders for its shares refuses to share.
    let shared: BTreeSet<PartyId> = advertised
        .iter()
        .copied()
        .filter(|u| !d.before_shares.contains(u) && count(*u, &advertised, true) >= t)
        .collect();
    if shared.len() < t || shared.iter().any(|&u| count(u, &shared, true) < t) {
        return None;
    }
    let masked: BTreeSet<PartyId> = shared.difference(&d.before_masked).copied().collect();
    if masked.len() < t || shared.iter().any(|&u| count(u, &masked, true) < t) {
        return None;
    }
    let unmasked: BTreeSet<PartyId> = masked.difference(&d.before_unmask).copied().collect();
    if unmasked.len() < t || shared.iter().any(|&u| count(u, &unmasked, masked.contains(&u)) < t) {
        return None;
    }
    Some(masked.into_iter().collect())
}

fn dropouts(n: u32, when: &[u8]) -> Dropouts {
    let mut d = Dropouts::default();
    for (i, &w) in when.iter().take(n as usize).enumerate() {
        let id = i as PartyId + 1;
        match w {
            6 => d.before_advertise.insert(id),
            7 => d.before_shares.insert(id),
            8 => d.before_masked.insert(id),
            9 => d.before_unmask.insert(id),
            _ => false,
        };
    }
    d
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// For random n, k, t and dropouts at every round: the plain sum of the
    /// parties the model says contribute, or an abort where it says some
    /// neighbourhood falls short.
    #[test]
    fn neighbourhood_rounds_sum_or_abort_as_the_model_says(
        seed in any::<u64>(), n in 4u32..16, k_pick in any::<u32>(), t_pick in any::<u32>(), dim in 1usize..6,
        when in proptest::collection::vec(0u8..10, 16),
    ) {
        let k = 2 + 2 * (k_pick % ((n - 1) / 2)); // even, 2 ≤ k ≤ n − 1
        let t = k / 2 + 1 + t_pick % (k / 2 + 1); // a strict majority of k + 1, at most k + 1
        let config = Config::neighbourhood(n, k, t, dim, SessionId(seed.to_be_bytes().repeat(2).try_into().expect("16")))
            .expect("valid parameters");
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let inputs = inputs(n, dim, &mut rng);
        let d = dropouts(n, &when);
        match (model(&config, &d), simulate(&config, &inputs, &d, &mut rng)) {
            (Some(expected), Ok(outcome)) => {
                prop_assert_eq!(&outcome.contributors, &expected);
                prop_assert_eq!(outcome.sum, plain_sum(&inputs, &expected));
            }
            (None, Err(e)) => prop_assert!(matches!(e, Error::Abort { .. }), "{e}"),
            (m, o) => prop_assert!(false, "model {m:?}, round {:?}", o.map(|o| o.contributors)),
        }
    }
}

#[test]
fn the_graph_is_harary_regular_symmetric_and_fixed_by_the_session() {
    let a = Config::neighbourhood(20, 6, 4, 1, SessionId([1; 16])).expect("config");
    let b = Config::neighbourhood(20, 6, 4, 1, SessionId([2; 16])).expect("config");
    for u in 1..=20 {
        let near = a.neighbours(u);
        assert_eq!(near.len(), 6);
        assert!(!near.contains(&u));
        for v in &near {
            assert!(a.neighbours(*v).contains(&u), "{u} and {v}");
        }
    }
    assert_eq!(a.neighbours(1), a.clone().neighbours(1));
    assert!((1..=20).any(|u| a.neighbours(u) != b.neighbours(u)), "another session draws another graph");
    // k = n − 1 is the complete graph.
    let full = Config::neighbourhood(7, 6, 4, 1, SessionId([1; 16])).expect("config");
    assert_eq!(full.graph(), Graph::Complete);
    assert_eq!(full.neighbours(3), vec![1, 2, 4, 5, 6, 7]);
}

#[test]
fn neighbourhood_parameters_are_checked() {
    let s = SessionId([0; 16]);
    assert!(Config::neighbourhood(10, 3, 3, 1, s).is_err(), "odd k");
    assert!(Config::neighbourhood(10, 0, 1, 1, s).is_err(), "k = 0");
    assert!(Config::neighbourhood(10, 10, 6, 1, s).is_err(), "k ≥ n");
    assert!(Config::neighbourhood(10, 4, 2, 1, s).is_err(), "t not a majority of k + 1");
    assert!(Config::neighbourhood(10, 4, 6, 1, s).is_err(), "t > k + 1");
    assert!(Config::neighbourhood(10, 4, 3, 0, s).is_err(), "empty vectors");
    assert!(Config::neighbourhood(10, 4, 3, 1, s).is_ok());
    assert!(Config::neighbourhood(10, 4, 5, 1, s).is_ok());
}

#[test]
fn harary_parameters_grow_slowly_and_keep_a_majority() {
    assert_eq!(harary_parameters(3, 0.1, 0.3), None);
    // The values docs/secagg.md quotes for the benchmark.
    assert_eq!(harary_parameters(100, 0.1, 0.3), Some((60, 31)));
    assert_eq!(harary_parameters(500, 0.1, 0.3), Some((142, 72)));
    let mut last = 0;
    for n in [1_000, 10_000, 100_000] {
        let (k, t) = harary_parameters(n, 0.1, 0.3).expect("parameters");
        assert!(k % 2 == 0 && k < n - 1 && 2 * t > k + 1 && t <= k + 1, "n {n}: k {k}, t {t}");
        assert!(k >= last && k < n / 5, "n {n}: k {k}");
        last = k;
        Config::neighbourhood(n, k, t, 1, SessionId([0; 16])).expect("accepted");
    }
}

/// Runs the first two rounds with one RNG per client (so one client's
/// absence does not change another's randomness), `absent` never sharing.
fn masked_vector_of(config: &Config, party: PartyId, absent: Option<PartyId>) -> Vec<u32> {
    let mut rngs: Vec<ChaCha20Rng> = (0..=config.n).map(|i| ChaCha20Rng::seed_from_u64(u64::from(i))).collect();
    let mut clients: Vec<Client> = (1..=config.n)
        .map(|i| Client::new(config, i, vec![i; config.dim], &mut rngs[i as usize]).expect("client"))
        .collect();
    let mut server = Server::new(config);
    for c in &clients {
        server.receive_advertise(c.advertise()).expect("advertise");
    }
    let roster = server.roster().expect("roster");
    for c in clients.iter_mut().filter(|c| Some(c.id()) != absent) {
        let shares = c.share_keys(&roster, &mut rngs[c.id() as usize]).expect("shares");
        let addressed: Vec<PartyId> = shares.to.keys().copied().collect();
        assert_eq!(addressed, config.neighbours(c.id()), "party {} shares with its neighbours only", c.id());
        server.receive_shares(shares).expect("shares");
    }
    let inboxes = server.inboxes().expect("inboxes");
    let c = &mut clients[party as usize - 1];
    c.masked_input(&inboxes[&party]).expect("masked").vector
}

#[test]
fn a_partys_masks_and_shares_involve_only_its_neighbours() {
    let config = Config::neighbourhood(12, 4, 3, 8, SessionId([5; 16])).expect("config");
    let near = config.neighbours(1);
    let everyone = masked_vector_of(&config, 1, None);
    for w in 2..=12 {
        let without = masked_vector_of(&config, 1, Some(w));
        assert_eq!(without == everyone, !near.contains(&w), "party 1's mask and party {w}");
    }
}

/// Rounds 0-1 with a fixed seed, returning what the bad-input tests
/// tamper with.
fn shared_round(config: &Config, seed: u64) -> (Vec<Client>, Server, ChaCha20Rng) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let inputs = inputs(config.n, config.dim, &mut rng);
    let mut clients: Vec<Client> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, x)| Client::new(config, i as PartyId + 1, x, &mut rng).expect("client"))
        .collect();
    let mut server = Server::new(config);
    for c in &clients {
        server.receive_advertise(c.advertise()).expect("advertise");
    }
    let roster = server.roster().expect("roster");
    for c in &mut clients {
        let shares = c.share_keys(&roster, &mut rng).expect("shares");
        server.receive_shares(shares).expect("shares");
    }
    (clients, server, rng)
}

#[test]
fn shares_for_a_non_neighbour_are_refused() {
    let config = Config::neighbourhood(9, 4, 3, 2, SessionId([6; 16])).expect("config");
    let stranger = (2..=9).find(|v| !config.neighbours(1).contains(v)).expect("a non-neighbour");
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut clients: Vec<Client> =
        (1..=9).map(|i| Client::new(&config, i, vec![i, i], &mut rng).expect("client")).collect();
    let mut server = Server::new(&config);
    for c in &clients {
        server.receive_advertise(c.advertise()).expect("advertise");
    }
    let roster = server.roster().expect("roster");
    // A neighbourhood roster is enough for a client.
    let local = server.roster_for(1).expect("roster for 1");
    assert_eq!(local.keys().copied().collect::<Vec<_>>(), {
        let mut ids = config.neighbours(1);
        ids.push(1);
        ids.sort_unstable();
        ids
    });
    let mut shares = clients[0].share_keys(&local, &mut rng).expect("shares");
    let mut extra = shares.clone();
    let sealed = extra.to.values().next().cloned().expect("one share");
    extra.to.insert(stranger, sealed);
    assert_eq!(
        server.receive_shares(extra).unwrap_err(),
        Error::NotNeighbour { party: 1, other: stranger, round: "share keys" }
    );
    // A neighbour left out is refused too, and the honest message still goes.
    let first = *shares.to.keys().next().expect("a neighbour");
    let mut short = shares.clone();
    short.to.remove(&first);
    assert!(matches!(server.receive_shares(short), Err(Error::Protocol(_))));
    server.receive_shares(shares.clone()).expect("honest shares");
    // A client refuses an inbox holding shares from a non-neighbour.
    let c = &mut clients[stranger as usize - 1];
    let theirs = c.share_keys(&roster, &mut rng).expect("shares");
    shares.to.clear();
    let mut inbox = crate::Inbox::new();
    inbox.insert(1, theirs.to.values().next().cloned().expect("one share"));
    assert_eq!(
        c.masked_input(&inbox).unwrap_err(),
        Error::NotNeighbour { party: 1, other: stranger, round: "share keys" }
    );
}

#[test]
fn an_unmask_revealing_a_share_for_a_non_neighbour_is_refused() {
    let config = Config::neighbourhood(9, 4, 3, 2, SessionId([8; 16])).expect("config");
    let (mut clients, mut server, _) = shared_round(&config, 9);
    let inboxes = server.inboxes().expect("inboxes");
    // Party 1's non-neighbour `w` drops before sending its masked vector.
    let near = config.neighbours(1);
    let w = (2..=9).find(|v| !near.contains(v)).expect("a non-neighbour");
    for c in clients.iter_mut().filter(|c| c.id() != w) {
        server.receive_masked(c.masked_input(&inboxes[&c.id()]).expect("masked")).expect("masked");
    }
    let survivors = server.survivors().expect("survivors");
    let honest = clients[0].unmask(&survivors).expect("unmask");
    assert!(honest.key_shares.is_empty(), "party 1 holds no share of a non-neighbour");
    let mut key = honest.clone();
    key.key_shares.insert(w, [1; 32]);
    assert_eq!(server.receive_unmask(key).unwrap_err(), Error::NotNeighbour { party: 1, other: w, round: "unmask" });
    let survivor = (2..=9).find(|v| !near.contains(v) && *v != w).expect("a surviving non-neighbour");
    let mut seed = honest.clone();
    seed.seed_shares.insert(survivor, [1; 32]);
    assert_eq!(
        server.receive_unmask(seed).unwrap_err(),
        Error::NotNeighbour { party: 1, other: survivor, round: "unmask" }
    );
    server.receive_unmask(honest).expect("the honest message still goes");
}

#[test]
fn a_short_neighbourhood_aborts_naming_the_party() {
    // k = 2, t = 2: a dropped party's key needs both its neighbours.
    let config = Config::neighbourhood(8, 2, 2, 1, SessionId([3; 16])).expect("config");
    let v = 1;
    let near = config.neighbours(v);
    let d = Dropouts { before_masked: [v, near[0]].into_iter().collect(), ..Dropouts::default() };
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let inputs = inputs(8, 1, &mut rng);
    let e = simulate(&config, &inputs, &d, &mut rng).unwrap_err();
    assert!(matches!(e, Error::Abort { round: "masked input", party: Some(p), .. } if p == v || p == near[0]), "{e}");
    assert!(e.to_string().contains("neighbourhood"), "{e}");
}

/// One round with a fixed seed in which `dropped` sends no masked vector:
/// every Unmask message and the server's output.
fn golden_round(config: &Config, dropped: PartyId) -> (Vec<Unmask>, Vec<u32>, Vec<Vec<u32>>) {
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let inputs = inputs(config.n, config.dim, &mut rng);
    let mut clients: Vec<Client> = inputs
        .iter()
        .enumerate()
        .map(|(i, x)| Client::new(config, i as PartyId + 1, x.clone(), &mut rng).expect("client"))
        .collect();
    let mut server = Server::new(config);
    for c in &clients {
        server.receive_advertise(c.advertise()).expect("advertise");
    }
    let roster = server.roster().expect("roster");
    for c in &mut clients {
        server.receive_shares(c.share_keys(&roster, &mut rng).expect("shares")).expect("shares");
    }
    let inboxes = server.inboxes().expect("inboxes");
    for c in clients.iter_mut().filter(|c| c.id() != dropped) {
        server.receive_masked(c.masked_input(&inboxes[&c.id()]).expect("masked")).expect("masked");
    }
    let survivors = server.survivors().expect("survivors");
    let mut unmasks = Vec::new();
    for c in clients.iter().filter(|c| c.id() != dropped) {
        let u = c.unmask(&survivors).expect("unmask");
        server.receive_unmask(u.clone()).expect("unmask");
        unmasks.push(u);
    }
    (unmasks, server.finish().expect("sum"), inputs)
}

/// SHA-256 over an Unmask's fields in a fixed order, hex.
fn digest(u: &Unmask) -> String {
    let mut h = Sha256::new();
    h.update(u.from.to_be_bytes());
    for (kind, shares) in [(0u8, &u.seed_shares), (1, &u.key_shares)] {
        for (v, s) in shares {
            h.update([kind]);
            h.update(v.to_be_bytes());
            h.update(s);
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Fixed seeds give fixed later rounds: a change to share encoding,
/// reconstruction, the graph or mask removal shows up here.
#[test]
fn golden_unmask_and_output() {
    let complete = Config::new(5, 3, 4, SessionId([9; 16])).expect("config");
    let (unmasks, sum, inputs) = golden_round(&complete, 5);
    assert_eq!(sum, plain_sum(&inputs, &[1, 2, 3, 4]));
    assert_eq!(sum, GOLDEN_COMPLETE_SUM);
    assert_eq!(digest(&unmasks[0]), GOLDEN_COMPLETE_UNMASK);

    let sparse = Config::neighbourhood(9, 4, 3, 4, SessionId([9; 16])).expect("config");
    assert_eq!(sparse.neighbours(1), GOLDEN_SPARSE_NEIGHBOURS);
    let (unmasks, sum, inputs) = golden_round(&sparse, 9);
    assert_eq!(sum, plain_sum(&inputs, &[1, 2, 3, 4, 5, 6, 7, 8]));
    assert_eq!(sum, GOLDEN_SPARSE_SUM);
    assert_eq!(digest(&unmasks[0]), GOLDEN_SPARSE_UNMASK);
}

const GOLDEN_COMPLETE_SUM: [u32; 4] = [28403996, 35617752, 47203001, 32547595];
const GOLDEN_COMPLETE_UNMASK: &str = "856ee4327a47b706ae946ac77306b86cb6ad99370e488dc42bd49985a7ae64e6";
const GOLDEN_SPARSE_NEIGHBOURS: [PartyId; 4] = [2, 3, 5, 9];
const GOLDEN_SPARSE_SUM: [u32; 4] = [71511214, 85254201, 73482803, 82036528];
const GOLDEN_SPARSE_UNMASK: &str = "f766c99636b1803a3a030c81880f9c5f4a3a6d7632e663e260cad5c8dcba3e06";

/// The check a network layer runs before signing a survivor list refuses
/// exactly what `unmask` refuses, and accepts the server's own list.
#[test]
fn a_survivor_list_is_checked_before_it_is_signed() {
    let config = Config::new(5, 3, 2, SessionId([4; 16])).expect("config");
    let (mut clients, mut server, _) = shared_round(&config, 11);
    let inboxes = server.inboxes().expect("inboxes");
    for c in clients.iter_mut().filter(|c| c.id() != 5) {
        server.receive_masked(c.masked_input(&inboxes[&c.id()]).expect("masked")).expect("masked");
    }
    let survivors = server.survivors().expect("survivors");
    let c = &clients[0];
    assert_eq!(c.check_survivors(&survivors).expect("the server's list"), survivors.iter().copied().collect());
    for bad in [&[1, 2][..], &[1, 2, 3, 9], &[2, 3, 4], &[0, 1, 2, 3]] {
        let checked = c.check_survivors(bad).map(|_| ());
        assert_eq!(checked, c.unmask(bad).map(|_| ()), "{bad:?}");
        assert!(checked.is_err(), "{bad:?}");
    }
}
