//! A small circuit language over TFHE blocks, its builder and its plaintext
//! interpreter.
//!
//! A circuit is a DAG of *blocks*: values in `0..=15` that one shortint
//! ciphertext (2 message bits, 2 carry bits) holds. There are three kinds of
//! operation:
//!
//! * **linear** — an integer combination of blocks plus a constant: free
//!   under TFHE (no bootstrap), but it adds noise;
//! * **lookup** — any function `0..=15 -> 0..=15` of one block: one
//!   programmable bootstrap (PBS), which also resets the noise;
//! * **radix** — scalar arithmetic on a multi-block integer done with tfhe's
//!   integer operations (only the coordinator-side plan's credit line uses it).
//!
//! The builder tracks, for every block, the largest value it can hold and its
//! noise level in tfhe's accounting, and refuses to build anything that could
//! overflow a block or exceed the noise budget a PBS tolerates. Constants are
//! folded, identical linear combinations and lookups are shared, and
//! multi-input functions are evaluated by packing inputs into one block.
//!
//! The same circuit runs in the clear ([`Circuit::eval_plain`]) and under
//! TFHE (`crate::fhe`); the plaintext run checks every declared bound, so a
//! property test over the plaintext interpreter checks that the circuit can
//! never leave the space the encrypted run relies on.

use std::collections::HashMap;

use crate::error::{Error, Result};

pub(crate) mod gadgets;

/// Largest value a block holds (message and carry space of the parameters).
pub(crate) const BLOCK_MAX: u8 = 15;
/// Largest noise level a PBS input may have; tfhe's `max_noise_level` for the
/// parameters jointscore uses (checked when keys are made).
pub(crate) const NOISE_MAX: u8 = 5;
/// Inputs are encrypted as base-4 digits.
pub(crate) const DIGIT_BASE: u64 = 4;

/// A value in a circuit under construction: a known constant or a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Val {
    /// A public constant.
    Const(u8),
    /// The output of a node.
    Wire(u32),
}

/// One operation.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// The `n`-th input block.
    Input(usize),
    /// `constant + sum(coefficient * node)`.
    Linear { terms: Vec<(u32, i8)>, constant: i16 },
    /// A lookup table over the input's value.
    Lut { input: u32, table: [u8; 16] },
    /// Output digit `index` of radix group `group`.
    Radix { group: usize, index: usize },
}

/// A node with its static bounds.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) op: Op,
    /// Largest value the node can hold.
    pub(crate) max: u8,
    /// Noise level in tfhe's accounting (1 = fresh or just bootstrapped).
    pub(crate) noise: u8,
    /// Bootstrap depth: the PBS level at which the node becomes available.
    pub(crate) depth: u32,
    /// Index of the build phase that created the node, for cost reports.
    pub(crate) phase: u8,
}

/// `min(cap, floor((min(x, clamp_max) + offset) * mul / div))` on the base-4
/// integer `x`, producing `out_digits` base-4 digits.
#[derive(Clone, Debug)]
pub(crate) struct RadixGroup {
    pub(crate) digits: Vec<Val>,
    pub(crate) clamp_max: u64,
    pub(crate) offset: u64,
    pub(crate) mul: u64,
    pub(crate) div: u64,
    pub(crate) cap: u64,
    pub(crate) out_digits: usize,
}

impl RadixGroup {
    pub(crate) fn apply(&self, x: u64) -> u64 {
        let v = u128::from(x.min(self.clamp_max) + self.offset);
        (v * u128::from(self.mul) / u128::from(self.div)).min(u128::from(self.cap)) as u64
    }

    /// Blocks needed so that no intermediate overflows.
    pub(crate) fn work_blocks(&self) -> usize {
        let widest = u128::from(self.clamp_max + self.offset) * u128::from(self.mul.max(1));
        let bits = 128 - widest.leading_zeros() as usize;
        bits.div_ceil(2).max(self.digits.len()).max(self.out_digits) + 1
    }
}

/// A finished circuit: nodes in topological order, the number of input
/// blocks, and named outputs made of blocks (each block a sum of parts that
/// the decryptor adds after decryption).
#[derive(Clone, Debug)]
pub struct Circuit {
    pub(crate) nodes: Vec<Node>,
    pub(crate) phases: Vec<String>,
    pub(crate) input_count: usize,
    pub(crate) groups: Vec<RadixGroup>,
    pub(crate) outputs: Vec<(String, Vec<Vec<Val>>)>,
    /// The lookup nodes grouped by the bootstrap that computes them: every
    /// group reads one input block and is evaluated in one blind rotation
    /// (tfhe's many-lookup-table PBS). Every lookup node is in exactly one
    /// group; see [`share_bootstraps`].
    pub(crate) bootstraps: Vec<Vec<u32>>,
}

/// Static cost figures of a circuit.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CircuitStats {
    /// Lookups per build phase, in build order (what each part costs).
    pub phases: Vec<(String, usize)>,
    /// Programmable bootstraps the lookup nodes cost: lookups that read the
    /// same block share one when its range allows (many-lookup-table PBS).
    pub lookups: usize,
    /// Lookup tables (functions of one block) the circuit applies.
    pub tables: usize,
    /// Linear (bootstrap-free) nodes.
    pub linear: usize,
    /// Radix groups (their bootstraps are counted only when run).
    pub radix_groups: usize,
    /// Longest chain of bootstraps.
    pub depth: u32,
    /// Input blocks.
    pub inputs: usize,
    /// Output blocks (parts included).
    pub output_blocks: usize,
}

impl Circuit {
    /// Static cost figures.
    pub fn stats(&self) -> CircuitStats {
        let mut s = CircuitStats { inputs: self.input_count, radix_groups: self.groups.len(), ..Default::default() };
        s.phases = self.phases.iter().map(|p| (p.clone(), 0)).collect();
        for n in &self.nodes {
            match n.op {
                Op::Lut { .. } => s.tables += 1,
                Op::Linear { .. } => s.linear += 1,
                _ => {}
            }
            s.depth = s.depth.max(n.depth);
        }
        // A shared bootstrap is charged to the phase of its first lookup.
        for group in &self.bootstraps {
            s.lookups += 1;
            s.phases[usize::from(self.nodes[group[0] as usize].phase)].1 += 1;
        }
        s.output_blocks = self.outputs.iter().map(|(_, d)| d.iter().map(Vec::len).sum::<usize>()).sum();
        s
    }

    /// Number of input blocks the circuit expects.
    pub fn input_count(&self) -> usize {
        self.input_count
    }

    /// Runs the circuit in the clear. Each output is a list of blocks, each
    /// block the list of its parts' values. Fails if any value leaves its
    /// declared bound — which would make the encrypted run diverge.
    pub fn eval_plain(&self, inputs: &[u8]) -> Result<Vec<(String, Vec<Vec<u8>>)>> {
        if inputs.len() != self.input_count {
            return Err(Error::Internal(format!(
                "{} input blocks for a circuit of {}",
                inputs.len(),
                self.input_count
            )));
        }
        let mut vals = vec![0u8; self.nodes.len()];
        let mut group_out: Vec<Option<Vec<u8>>> = vec![None; self.groups.len()];
        let read = |vals: &[u8], v: Val| match v {
            Val::Const(c) => c,
            Val::Wire(w) => vals[w as usize],
        };
        for (i, node) in self.nodes.iter().enumerate() {
            let v: i32 = match &node.op {
                Op::Input(n) => i32::from(inputs[*n]),
                Op::Linear { terms, constant } => {
                    i32::from(*constant)
                        + terms.iter().map(|&(t, c)| i32::from(c) * i32::from(vals[t as usize])).sum::<i32>()
                }
                Op::Lut { input, table } => i32::from(table[usize::from(vals[*input as usize])]),
                Op::Radix { group, index } => {
                    if group_out[*group].is_none() {
                        let g = &self.groups[*group];
                        let x =
                            g.digits.iter().rev().fold(0u64, |acc, &d| acc * DIGIT_BASE + u64::from(read(&vals, d)));
                        group_out[*group] = Some(to_digits(g.apply(x), g.out_digits));
                    }
                    group_out[*group].as_ref().map_or(0, |d| i32::from(d[*index]))
                }
            };
            if v < 0 || v > i32::from(node.max) {
                return Err(Error::Internal(format!("node {i} holds {v}, outside its bound 0..={}", node.max)));
            }
            vals[i] = v as u8;
        }
        Ok(self
            .outputs
            .iter()
            .map(|(name, digits)| {
                (name.clone(), digits.iter().map(|parts| parts.iter().map(|&p| read(&vals, p)).collect()).collect())
            })
            .collect())
    }
}

/// Base-4 digits of `v`, least significant first.
pub(crate) fn to_digits(v: u64, n: usize) -> Vec<u8> {
    (0..n).map(|i| ((v >> (2 * i)) & 3) as u8).collect()
}

/// Digits needed to write `max` in base 4 (at least one).
pub(crate) fn digits_for(max: u64) -> usize {
    let bits = 64 - max.leading_zeros() as usize;
    bits.div_ceil(2).max(1)
}

/// Terms, constant and declared bound of a linear node, for sharing.
type LinearKey = (Vec<(u32, i8)>, i16, Option<u8>);

/// Builds circuits; see the module documentation for what it guarantees.
#[derive(Default)]
pub(crate) struct Builder {
    nodes: Vec<Node>,
    phases: Vec<String>,
    input_count: usize,
    groups: Vec<RadixGroup>,
    outputs: Vec<(String, Vec<Vec<Val>>)>,
    linear_cache: HashMap<LinearKey, u32>,
    lut_cache: HashMap<(u32, [u8; 16]), u32>,
}

impl Builder {
    /// An empty circuit.
    pub(crate) fn new() -> Builder {
        Builder::default()
    }

    /// Largest value `v` can hold.
    pub(crate) fn max(&self, v: Val) -> u8 {
        match v {
            Val::Const(c) => c,
            Val::Wire(w) => self.nodes[w as usize].max,
        }
    }

    /// Noise level of `v` in tfhe's accounting (0 for constants).
    pub(crate) fn noise(&self, v: Val) -> u8 {
        match v {
            Val::Const(_) => 0,
            Val::Wire(w) => self.nodes[w as usize].noise,
        }
    }

    fn depth(&self, v: Val) -> u32 {
        match v {
            Val::Const(_) => 0,
            Val::Wire(w) => self.nodes[w as usize].depth,
        }
    }

    /// Attributes the nodes built from now on to `name` in cost reports.
    pub(crate) fn phase(&mut self, name: &str) {
        if self.phases.last().is_none_or(|p| p != name) {
            self.phases.push(name.to_string());
        }
    }

    fn push(&mut self, mut node: Node) -> u32 {
        if self.phases.is_empty() {
            self.phases.push("inputs".into());
        }
        node.phase = (self.phases.len() - 1) as u8;
        self.nodes.push(node);
        (self.nodes.len() - 1) as u32
    }

    /// A new input block holding at most `max`.
    pub(crate) fn input(&mut self, max: u8) -> Val {
        let n = self.input_count;
        self.input_count += 1;
        Val::Wire(self.push(Node { op: Op::Input(n), max, noise: 1, depth: 0, phase: 0 }))
    }

    /// `n` input digits (base 4), least significant first.
    pub(crate) fn input_digits(&mut self, n: usize) -> Vec<Val> {
        (0..n).map(|_| self.input(3)).collect()
    }

    /// `constant + sum(c * v)`. Fails if the result could leave `0..=15` or
    /// the noise could exceed what a later bootstrap tolerates.
    pub(crate) fn linear(&mut self, terms: &[(Val, i8)], constant: i16) -> Result<Val> {
        self.linear_impl(terms, constant, None)
    }

    fn linear_impl(&mut self, terms: &[(Val, i8)], constant: i16, bound: Option<u8>) -> Result<Val> {
        let mut k = i32::from(constant);
        let mut wires: Vec<(u32, i8)> = Vec::new();
        for &(v, c) in terms {
            match v {
                Val::Const(x) => k += i32::from(c) * i32::from(x),
                Val::Wire(w) if c != 0 => wires.push((w, c)),
                Val::Wire(_) => {}
            }
        }
        if wires.is_empty() {
            return u8::try_from(k)
                .ok()
                .filter(|&v| v <= BLOCK_MAX)
                .map(Val::Const)
                .ok_or_else(|| Error::Internal(format!("constant {k} outside a block")));
        }
        if wires.len() == 1 && wires[0].1 == 1 && k == 0 {
            return Ok(Val::Wire(wires[0].0));
        }
        let (mut lo, mut hi) = (k, k);
        let mut noise = 0u32;
        let mut depth = 0;
        for &(w, c) in &wires {
            let node = &self.nodes[w as usize];
            let span = i32::from(c) * i32::from(node.max);
            if span >= 0 {
                hi += span;
            } else {
                lo += span;
            }
            noise += u32::from(c.unsigned_abs()) * u32::from(node.noise);
            depth = depth.max(node.depth);
        }
        if let Some(b) = bound {
            hi = hi.min(i32::from(b));
        }
        if lo < 0 || hi > i32::from(BLOCK_MAX) {
            return Err(Error::Plan(format!("a linear combination spans {lo}..={hi}, beyond one block (0..=15)")));
        }
        let key = (wires.clone(), k as i16, bound);
        if let Some(&n) = self.linear_cache.get(&key) {
            return Ok(Val::Wire(n));
        }
        let noise = u8::try_from(noise).unwrap_or(u8::MAX);
        let op = Op::Linear { terms: wires, constant: k as i16 };
        let n = self.push(Node { op, max: hi as u8, noise, depth, phase: 0 });
        self.linear_cache.insert(key, n);
        Ok(Val::Wire(n))
    }

    /// A sum known to stay within `bound`, split into parts that each fit
    /// the noise budget (the decryptor adds the parts).
    pub(crate) fn bounded_parts(&mut self, terms: &[Val], bound: u8) -> Result<Vec<Val>> {
        let mut parts = Vec::new();
        let mut chunk: Vec<(Val, i8)> = Vec::new();
        let mut noise = 0;
        for &t in terms.iter().filter(|t| **t != Val::Const(0)) {
            let n = self.noise(t);
            if noise + n > NOISE_MAX && !chunk.is_empty() {
                parts.push(self.linear_impl(&chunk, 0, Some(bound))?);
                chunk.clear();
                noise = 0;
            }
            chunk.push((t, 1));
            noise += n;
        }
        if !chunk.is_empty() || parts.is_empty() {
            parts.push(self.linear_impl(&chunk, 0, Some(bound))?);
        }
        Ok(parts)
    }

    /// A sum known to stay within `bound`, as one block usable as a lookup
    /// input (parts are cleaned and re-added when the noise requires).
    pub(crate) fn bounded_sum(&mut self, terms: &[Val], bound: u8) -> Result<Val> {
        let parts = self.bounded_parts(terms, bound)?;
        if parts.len() == 1 {
            return Ok(parts[0]);
        }
        let cleaned: Vec<Val> = parts.into_iter().map(|p| self.clean(p)).collect::<Result<_>>()?;
        self.bounded_sum(&cleaned, bound)
    }

    /// `constant + sum(v)` over non-negative terms, cleaning partial sums as
    /// needed so that the result can feed a lookup.
    pub(crate) fn sum(&mut self, terms: &[Val], constant: i16) -> Result<Val> {
        let mut acc: Vec<(Val, i8)> = Vec::new();
        let mut noise = 0;
        for &t in terms {
            let n = self.noise(t);
            if noise + n > NOISE_MAX && !acc.is_empty() {
                let partial = self.linear(&acc, 0)?;
                let partial = self.clean(partial)?;
                acc = vec![(partial, 1)];
                noise = 1;
            }
            acc.push((t, 1));
            noise += n;
        }
        self.linear(&acc, constant)
    }

    /// A lookup of `f` over `v`'s possible values: one PBS (none if `v` is a
    /// constant).
    pub(crate) fn lut(&mut self, v: Val, f: impl Fn(u8) -> u8) -> Result<Val> {
        let w = match v {
            Val::Const(c) => return Ok(Val::Const(f(c))),
            Val::Wire(w) => w,
        };
        let node_max = self.nodes[w as usize].max;
        if self.nodes[w as usize].noise > NOISE_MAX {
            return Err(Error::Internal("lookup input exceeds the noise budget".into()));
        }
        let mut table = [0u8; 16];
        let mut out_max = 0;
        for x in 0..=node_max {
            let y = f(x);
            if y > BLOCK_MAX {
                return Err(Error::Plan(format!("a lookup result {y} does not fit one block")));
            }
            table[usize::from(x)] = y;
            out_max = out_max.max(y);
        }
        // A function constant over the input's range needs no bootstrap.
        if (0..=node_max).all(|x| table[usize::from(x)] == table[0]) {
            return Ok(Val::Const(table[0]));
        }
        if let Some(&n) = self.lut_cache.get(&(w, table)) {
            return Ok(Val::Wire(n));
        }
        let depth = self.nodes[w as usize].depth + 1;
        let n = self.push(Node { op: Op::Lut { input: w, table }, max: out_max, noise: 1, depth, phase: 0 });
        self.lut_cache.insert((w, table), n);
        Ok(Val::Wire(n))
    }

    /// `v` with noise reset (an identity lookup when needed).
    pub(crate) fn clean(&mut self, v: Val) -> Result<Val> {
        if self.noise(v) <= 1 {
            return Ok(v);
        }
        self.lut(v, |x| x)
    }

    /// A function of several values in one PBS: constants are substituted,
    /// the rest packed into one block. Fails if they cannot share a block.
    pub(crate) fn lut_multi(&mut self, vals: &[Val], f: impl Fn(&[u8]) -> u8) -> Result<Val> {
        let mut vals = vals.to_vec();
        loop {
            let wires: Vec<usize> = (0..vals.len()).filter(|&i| matches!(vals[i], Val::Wire(_))).collect();
            let maxes: Vec<u32> = vals.iter().map(|&v| u32::from(self.max(v))).collect();
            let noises: Vec<u32> = vals.iter().map(|&v| u32::from(self.noise(v))).collect();
            // The packing order decides the coefficients, and so the noise:
            // take the cheapest order that fits one block.
            let Some((order, noise)) = cheapest_packing(&wires, &maxes, &noises) else {
                return Err(Error::Plan(format!("{} values do not fit one block together", wires.len())));
            };
            if noise > u32::from(NOISE_MAX) {
                // Clean the noisiest value that is not yet clean and retry.
                let Some(&i) = wires.iter().filter(|&&i| noises[i] > 1).max_by_key(|&&i| noises[i]) else {
                    return Err(Error::Plan("packed values exceed the noise budget".into()));
                };
                vals[i] = self.clean(vals[i])?;
                continue;
            }
            let mut coeff = 1i8;
            let mut terms = Vec::new();
            for &i in &order {
                terms.push((vals[i], coeff));
                coeff *= (maxes[i] + 1) as i8;
            }
            let packed = self.linear(&terms, 0)?;
            let consts = vals.clone();
            return self.lut(packed, move |x| {
                let mut args: Vec<u8> = consts.iter().map(|v| if let Val::Const(c) = v { *c } else { 0 }).collect();
                let mut rest = u32::from(x);
                for &i in &order {
                    let base = maxes[i] + 1;
                    args[i] = (rest % base) as u8;
                    rest /= base;
                }
                f(&args)
            });
        }
    }

    /// `min(cap, floor((min(x, clamp_max) + offset) * mul / div))` of the
    /// base-4 integer `digits`, as `out_digits` clean digits.
    #[allow(clippy::too_many_arguments)] // the formula's constants, named at the call site
    pub(crate) fn radix_line(
        &mut self,
        digits: &[Val],
        clamp_max: u64,
        offset: u64,
        mul: u64,
        div: u64,
        cap: u64,
        out_digits: usize,
    ) -> Vec<Val> {
        let group = self.groups.len();
        let depth = digits.iter().map(|&d| self.depth(d)).max().unwrap_or(0) + 1;
        self.groups.push(RadixGroup { digits: digits.to_vec(), clamp_max, offset, mul, div, cap, out_digits });
        (0..out_digits)
            .map(|index| {
                Val::Wire(self.push(Node { op: Op::Radix { group, index }, max: 3, noise: 1, depth, phase: 0 }))
            })
            .collect()
    }

    /// Declares a named output: blocks, each a list of parts.
    pub(crate) fn output(&mut self, name: &str, digits: Vec<Vec<Val>>) {
        self.outputs.push((name.to_string(), digits));
    }

    /// The finished circuit, without the nodes no output depends on (a
    /// plan builds shared parts before it knows which outputs need them).
    pub(crate) fn finish(self) -> Circuit {
        let Builder { nodes, phases, input_count, mut groups, mut outputs, .. } = self;
        let wire = |v: &Val| if let Val::Wire(w) = v { Some(*w) } else { None };
        let mut group_nodes: Vec<Vec<u32>> = vec![Vec::new(); groups.len()];
        for (i, n) in nodes.iter().enumerate() {
            if let Op::Radix { group, .. } = n.op {
                group_nodes[group].push(i as u32);
            }
        }
        let mut live = vec![false; nodes.len()];
        let mut stack: Vec<u32> =
            outputs.iter().flat_map(|(_, blocks)| blocks.iter().flatten()).filter_map(wire).collect();
        // Inputs stay: parties send every block of the plan.
        stack.extend((0..nodes.len() as u32).filter(|&i| matches!(nodes[i as usize].op, Op::Input(_))));
        while let Some(w) = stack.pop() {
            if std::mem::replace(&mut live[w as usize], true) {
                continue;
            }
            match &nodes[w as usize].op {
                Op::Input(_) => {}
                Op::Linear { terms, .. } => stack.extend(terms.iter().map(|&(t, _)| t)),
                Op::Lut { input, .. } => stack.push(*input),
                Op::Radix { group, .. } => {
                    // A group runs as a whole, so all its digits stay.
                    stack.extend(&group_nodes[*group]);
                    stack.extend(groups[*group].digits.iter().filter_map(wire));
                }
            }
        }
        let mut new_index = vec![u32::MAX; nodes.len()];
        let mut kept = Vec::new();
        for (i, node) in nodes.into_iter().enumerate() {
            if live[i] {
                new_index[i] = kept.len() as u32;
                kept.push(node);
            }
        }
        let remap = |v: Val| match v {
            Val::Wire(w) => Val::Wire(new_index[w as usize]),
            c => c,
        };
        for node in &mut kept {
            match &mut node.op {
                Op::Linear { terms, .. } => terms.iter_mut().for_each(|(t, _)| *t = new_index[*t as usize]),
                Op::Lut { input, .. } => *input = new_index[*input as usize],
                Op::Input(_) | Op::Radix { .. } => {}
            }
        }
        for g in &mut groups {
            g.digits = g.digits.iter().map(|&d| remap(d)).collect();
        }
        for (_, blocks) in &mut outputs {
            for parts in blocks.iter_mut() {
                parts.iter_mut().for_each(|p| *p = remap(*p));
            }
        }
        let bootstraps = share_bootstraps(&kept);
        Circuit { nodes: kept, phases, input_count, groups, outputs, bootstraps }
    }
}

/// Most lookup tables one blind rotation can serve: tfhe splits the
/// accumulator into one sub-table per function, so `k` functions need an
/// input below `(BLOCK_MAX + 1) / k`, and at most half the block space.
const MANY_LUT_MAX: usize = BLOCK_SPACE / 2;
/// Values a block can hold.
const BLOCK_SPACE: usize = BLOCK_MAX as usize + 1;

/// Groups the lookup nodes by the bootstrap that will compute them. Lookups
/// reading the same block are served by one many-lookup-table PBS, as many
/// per rotation as the block's declared range leaves room for: `k` tables
/// when the block never exceeds `16 / k - 1`. The declared range is what the
/// plaintext interpreter checks on every run, so a block can never hold a
/// value that would index past its sub-table. Groups are in node order of
/// their first lookup, which keeps evaluation deterministic.
fn share_bootstraps(nodes: &[Node]) -> Vec<Vec<u32>> {
    let mut readers: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut order = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if let Op::Lut { input, .. } = n.op {
            let list = readers.entry(input).or_default();
            if list.is_empty() {
                order.push(input);
            }
            list.push(i as u32);
        }
    }
    let mut groups = Vec::new();
    for input in order {
        let per_rotation =
            ((usize::from(BLOCK_MAX) + 1) / (usize::from(nodes[input as usize].max) + 1)).clamp(1, MANY_LUT_MAX);
        for chunk in readers[&input].chunks(per_rotation) {
            groups.push(chunk.to_vec());
        }
    }
    groups
}

/// The order of `wires` whose mixed-radix packing fits one block with the
/// least noise, and that noise; `None` if no order fits.
fn cheapest_packing(wires: &[usize], maxes: &[u32], noises: &[u32]) -> Option<(Vec<usize>, u32)> {
    fn go(
        rest: &mut Vec<usize>,
        order: &mut Vec<usize>,
        coeff: u32,
        noise: u32,
        m: &[u32],
        n: &[u32],
        best: &mut Option<(Vec<usize>, u32)>,
    ) {
        if rest.is_empty() {
            if coeff <= u32::from(BLOCK_MAX) + 1 && best.as_ref().is_none_or(|(_, b)| noise < *b) {
                *best = Some((order.clone(), noise));
            }
            return;
        }
        for k in 0..rest.len() {
            let i = rest.remove(k);
            order.push(i);
            go(rest, order, coeff * (m[i] + 1), noise + coeff * n[i], m, n, best);
            order.pop();
            rest.insert(k, i);
        }
    }
    let mut best = None;
    go(&mut wires.to_vec(), &mut Vec::new(), 1, 0, maxes, noises, &mut best);
    best
}
