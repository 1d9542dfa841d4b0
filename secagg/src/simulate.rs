//! A whole round in one process: for tests, benchmarks and studies.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand_core::CryptoRngCore;

use crate::error::Result;
use crate::{Client, Config, PartyId, Server};

/// Which parties drop, and before which of their messages.
#[derive(Clone, Debug, Default)]
pub struct Dropouts {
    /// Never advertise.
    pub before_advertise: BTreeSet<PartyId>,
    /// Advertise, then send no shares.
    pub before_shares: BTreeSet<PartyId>,
    /// Share keys, then send no masked input.
    pub before_masked: BTreeSet<PartyId>,
    /// Send a masked input, then no unmasking shares.
    pub before_unmask: BTreeSet<PartyId>,
}

/// What a simulated round produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The aggregate.
    pub sum: Vec<u32>,
    /// Parties whose vectors are in it.
    pub contributors: Vec<PartyId>,
    /// Time spent in the server's state machine.
    pub server: Duration,
    /// Time spent in all clients' state machines, divided by the clients.
    pub client: Duration,
    /// Bytes one party sends over the round (the largest over parties).
    pub bytes_per_client: usize,
}

/// Runs a round for `inputs[i]` held by party `i + 1`, with `dropouts`.
/// A client that refuses to go on (its neighbourhood too small, say) drops
/// out there, as it would on a network. Errors are the server's: an abort
/// when too few parties remain, in the round or in a neighbourhood.
pub fn simulate(
    config: &Config,
    inputs: &[Vec<u32>],
    dropouts: &Dropouts,
    rng: &mut impl CryptoRngCore,
) -> Result<Outcome> {
    let (mut server_time, mut client_time) = (Duration::ZERO, Duration::ZERO);
    // Messages are moved into the server inside the timed closure (taken
    // out of an Option), so copying them is not counted as server time.
    let mut timed_server = |f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        let start = Instant::now();
        let r = f();
        server_time += start.elapsed();
        r
    };
    let mut server = Server::new(config);
    let mut clients = Vec::new();
    let start = Instant::now();
    for (i, input) in inputs.iter().enumerate() {
        let id = PartyId::try_from(i + 1).unwrap_or(PartyId::MAX);
        clients.push(Client::new(config, id, input.clone(), rng)?);
    }
    client_time += start.elapsed();
    let mut sent = vec![0usize; clients.len()];

    let alive = |c: &Client, drop: &BTreeSet<PartyId>| !drop.contains(&c.id());
    for c in clients.iter().filter(|c| alive(c, &dropouts.before_advertise)) {
        let mut message = Some(c.advertise());
        sent[c.id() as usize - 1] += 68;
        timed_server(&mut || message.take().map_or(Ok(()), |m| server.receive_advertise(m)))?;
    }
    let mut roster = None;
    timed_server(&mut || {
        roster = Some(server.roster()?);
        Ok(())
    })?;
    let roster = roster.unwrap_or_default();

    let mut sharers: Vec<&mut Client> = clients
        .iter_mut()
        .filter(|c| roster.contains_key(&c.id()) && !dropouts.before_shares.contains(&c.id()))
        .collect();
    let mut refused = BTreeSet::new();
    for c in sharers.iter_mut() {
        let start = Instant::now();
        let message = c.share_keys(&roster, rng);
        client_time += start.elapsed();
        let Ok(message) = message else {
            refused.insert(c.id());
            continue;
        };
        sent[c.id() as usize - 1] += message.to.values().map(|s| s.len() + 4).sum::<usize>();
        let mut message = Some(message);
        timed_server(&mut || message.take().map_or(Ok(()), |m| server.receive_shares(m)))?;
    }
    let mut inboxes = Default::default();
    timed_server(&mut || {
        inboxes = server.inboxes()?;
        Ok(())
    })?;

    let mut maskers: Vec<&mut Client> = sharers
        .into_iter()
        .filter(|c| !dropouts.before_masked.contains(&c.id()) && !refused.contains(&c.id()))
        .collect();
    for c in maskers.iter_mut() {
        let start = Instant::now();
        let message = inboxes.get(&c.id()).map(|inbox| c.masked_input(inbox));
        client_time += start.elapsed();
        let Some(Ok(message)) = message else {
            refused.insert(c.id());
            continue;
        };
        sent[c.id() as usize - 1] += 4 * message.vector.len();
        let mut message = Some(message);
        timed_server(&mut || message.take().map_or(Ok(()), |m| server.receive_masked(m)))?;
    }
    let mut survivors = Vec::new();
    timed_server(&mut || {
        survivors = server.survivors()?;
        Ok(())
    })?;

    for c in maskers.iter().filter(|c| !dropouts.before_unmask.contains(&c.id()) && !refused.contains(&c.id())) {
        let start = Instant::now();
        let message = c.unmask(&survivors);
        client_time += start.elapsed();
        let Ok(message) = message else { continue };
        sent[c.id() as usize - 1] += 36 * (message.seed_shares.len() + message.key_shares.len());
        let mut message = Some(message);
        timed_server(&mut || message.take().map_or(Ok(()), |m| server.receive_unmask(m)))?;
    }
    let mut sum = Vec::new();
    timed_server(&mut || {
        sum = server.finish()?;
        Ok(())
    })?;
    let n = u32::try_from(inputs.len().max(1)).unwrap_or(u32::MAX);
    Ok(Outcome {
        sum,
        contributors: survivors,
        server: server_time,
        client: client_time / n,
        bytes_per_client: sent.into_iter().max().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::tests::{inputs, plain_sum};
    use crate::{Error, Masked, SessionId};

    fn config(n: u32, dim: usize) -> Config {
        Config::new(n, n / 2 + 1, dim, SessionId([9; 16])).expect("config")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn the_sum_is_the_plain_sum_under_any_tolerated_dropouts(
            seed in any::<u64>(), n in 3u32..10, dim in 1usize..12, drops in proptest::collection::vec(0u8..5, 10),
        ) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let config = config(n, dim);
            let inputs = inputs(n, dim, &mut rng);
            // Each party drops at one round (1-4) or not at all (0); keep at
            // most n - t dropouts so the round must succeed.
            let mut d = Dropouts::default();
            let budget = (n - config.threshold) as usize;
            for (i, &when) in drops.iter().take(n as usize).enumerate().filter(|(_, w)| **w > 0).take(budget) {
                let id = i as PartyId + 1;
                match when {
                    1 => d.before_advertise.insert(id),
                    2 => d.before_shares.insert(id),
                    3 => d.before_masked.insert(id),
                    _ => d.before_unmask.insert(id),
                };
            }
            let outcome = simulate(&config, &inputs, &d, &mut rng).expect("enough parties remain");
            let expected: Vec<PartyId> = (1..=n)
                .filter(|p| ![&d.before_advertise, &d.before_shares, &d.before_masked].iter().any(|s| s.contains(p)))
                .collect();
            prop_assert_eq!(&outcome.contributors, &expected);
            prop_assert_eq!(outcome.sum, plain_sum(&inputs, &expected));
        }

        #[test]
        fn too_many_dropouts_abort(seed in any::<u64>(), n in 3u32..10, when in 0u8..4) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let config = config(n, 3);
            let inputs = inputs(n, 3, &mut rng);
            let dropped: BTreeSet<PartyId> = (1..=n - config.threshold + 1).collect();
            let mut d = Dropouts::default();
            match when {
                0 => d.before_advertise = dropped,
                1 => d.before_shares = dropped,
                2 => d.before_masked = dropped,
                _ => d.before_unmask = dropped,
            }
            let e = simulate(&config, &inputs, &d, &mut rng).unwrap_err();
            prop_assert!(matches!(e, Error::Abort { .. }), "{e}");
        }
    }

    /// A fixed seed gives a fixed transcript: any change to key derivation,
    /// share encoding, mask expansion or signs shows up here.
    #[test]
    fn golden_transcript() {
        let mut rng = ChaCha20Rng::seed_from_u64(2026);
        let (_, mut clients, mut server, inputs) = through_sharing(5, 4, &mut rng);
        let inboxes = server.inboxes().expect("inboxes");
        let masked = clients[0].masked_input(&inboxes[&1]).expect("masked");
        assert_eq!(masked.vector, GOLDEN_MASKED);
        assert_eq!(inputs[0], GOLDEN_INPUT);
    }

    const GOLDEN_MASKED: [u32; 4] = [2105060183, 3297866659, 2871853495, 2657684625];
    const GOLDEN_INPUT: [u32; 4] = [8393964, 8432357, 13882786, 10515494];

    #[test]
    fn thresholds_must_be_a_strict_majority() {
        assert!(Config::new(10, 5, 1, SessionId([0; 16])).is_err());
        assert!(Config::new(10, 11, 1, SessionId([0; 16])).is_err());
        assert!(Config::new(10, 6, 0, SessionId([0; 16])).is_err());
        assert!(Config::new(10, 6, 1, SessionId([0; 16])).is_ok());
    }

    /// Runs rounds 0-1 for `n` honest clients and returns them with the
    /// server and inboxes, so tests can tamper with round 2 and 3.
    fn through_sharing(n: u32, dim: usize, rng: &mut ChaCha20Rng) -> (Config, Vec<Client>, Server, Vec<Vec<u32>>) {
        let config = config(n, dim);
        let inputs = inputs(n, dim, rng);
        let mut clients: Vec<Client> = inputs
            .iter()
            .enumerate()
            .map(|(i, x)| Client::new(&config, i as PartyId + 1, x.clone(), rng).expect("client"))
            .collect();
        let mut server = Server::new(&config);
        for c in &clients {
            server.receive_advertise(c.advertise()).expect("advertise");
        }
        let roster = server.roster().expect("roster");
        for c in &mut clients {
            let shares = c.share_keys(&roster, rng).expect("shares");
            server.receive_shares(shares).expect("shares");
        }
        (config, clients, server, inputs)
    }

    #[test]
    fn bad_messages_are_refused_and_count_as_that_partys_dropout() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (_, mut clients, mut server, inputs) = through_sharing(7, 4, &mut rng);
        let mut inboxes = server.inboxes().expect("inboxes");
        // Party 2's share for party 1 is tampered with in transit.
        if let Some(sealed) = inboxes.get_mut(&1).and_then(|i| i.get_mut(&2)) {
            sealed[0] ^= 1;
        }
        let mut masked: Vec<_> =
            clients.iter_mut().map(|c| c.masked_input(&inboxes[&c.id()]).expect("masked")).collect();
        assert_eq!(clients[0].rejected().iter().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(masked[0].rejected.iter().copied().collect::<Vec<_>>(), vec![2]);
        // Wrong length, unknown sender, duplicate, a rejection of shares
        // never sent: refused, nothing stored.
        let mut short = masked[4].clone();
        short.vector.pop();
        assert_eq!(server.receive_masked(short).unwrap_err(), Error::WrongLength { party: 5, got: 3, want: 4 });
        let stranger = Masked { from: 9, vector: vec![0; 4], rejected: Default::default() };
        assert!(matches!(server.receive_masked(stranger), Err(Error::NotInRound { party: 9, .. })));
        let mut accuser = masked[3].clone();
        accuser.rejected.insert(4);
        assert!(matches!(server.receive_masked(accuser), Err(Error::Protocol(_))));
        masked.remove(4);
        for m in masked {
            server.receive_masked(m.clone()).expect("masked");
            assert!(matches!(server.receive_masked(m), Err(Error::Duplicate { .. })));
        }
        // Party 5 counts as dropped after its bad vector, and party 2 after
        // party 1 reported its shares as failing authentication.
        let survivors = server.survivors().expect("survivors");
        assert_eq!(survivors, vec![1, 3, 4, 6, 7]);
        for v in server.view().masked.values().zip(&inputs) {
            assert_ne!(v.0, v.1, "the server holds no unmasked vector");
        }
        // Party 1 refuses a survivor list that still holds party 2.
        assert!(matches!(clients[0].unmask(&[1, 2, 3, 4, 6, 7]), Err(Error::Protocol(_))));
        for c in clients.iter().filter(|c| survivors.contains(&c.id())) {
            server.receive_unmask(c.unmask(&survivors).expect("unmask")).expect("unmask");
        }
        assert_eq!(server.finish().expect("sum"), plain_sum(&inputs, &survivors));
    }

    #[test]
    fn a_party_whose_shares_fail_everywhere_drops_only_itself() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let (_, mut clients, mut server, inputs) = through_sharing(7, 3, &mut rng);
        let mut inboxes = server.inboxes().expect("inboxes");
        // Party 3 seals garbage for everyone: no one can hold its shares.
        for inbox in inboxes.values_mut() {
            if let Some(sealed) = inbox.get_mut(&3) {
                sealed.iter_mut().for_each(|b| *b = 7);
            }
        }
        for c in &mut clients {
            server.receive_masked(c.masked_input(&inboxes[&c.id()]).expect("masked")).expect("masked");
        }
        let survivors = server.survivors().expect("survivors");
        assert_eq!(survivors, vec![1, 2, 4, 5, 6, 7]);
        for c in clients.iter().filter(|c| survivors.contains(&c.id())) {
            let unmask = c.unmask(&survivors).expect("unmask");
            assert!(!unmask.key_shares.contains_key(&3), "no one holds party 3's key");
            server.receive_unmask(unmask).expect("unmask");
        }
        // No one masked with party 3, so nothing of it needs removing.
        assert_eq!(server.finish().expect("sum"), plain_sum(&inputs, &survivors));
    }

    #[test]
    fn invalid_keys_and_strangers_are_refused_at_advertising() {
        let mut server = Server::new(&config(4, 1));
        let bad = crate::Advertise { from: 1, encryption: [0xff; 32], masking: [0xff; 32] };
        assert_eq!(server.receive_advertise(bad).unwrap_err(), Error::InvalidKey { party: 1 });
        let identity = crate::Advertise { from: 1, encryption: [0; 32], masking: [0; 32] };
        assert_eq!(server.receive_advertise(identity).unwrap_err(), Error::InvalidKey { party: 1 });
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let stranger = Client::new(&config(9, 1), 7, vec![1], &mut rng).expect("client").advertise();
        assert!(matches!(server.receive_advertise(stranger), Err(Error::NotInRound { party: 7, .. })));
    }

    #[test]
    fn a_client_refuses_to_reveal_for_a_survivor_list_it_did_not_see() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let (_, mut clients, mut server, _) = through_sharing(5, 2, &mut rng);
        let inboxes = server.inboxes().expect("inboxes");
        let c = &mut clients[0];
        c.masked_input(&inboxes[&1]).expect("masked");
        assert!(matches!(c.unmask(&[1, 2]), Err(Error::Abort { .. })));
        assert!(matches!(c.unmask(&[1, 2, 9]), Err(Error::Protocol(_))));
        assert!(matches!(c.unmask(&[2, 3, 4]), Err(Error::Protocol(_))));
    }
}
