//! Model tests: validation errors name field and line; writing a model and
//! reading it back keeps its id.

use proptest::prelude::*;

use super::*;

/// The shipped model with one line replaced; panics if `from` is absent
/// so a test cannot silently test nothing.
fn edited(from: &str, to: &str) -> String {
    assert!(CROSS_BORDER_SELLER.contains(from), "fixture text `{from}` not in the model");
    CROSS_BORDER_SELLER.replacen(from, to, 1)
}

fn line_of(text: &str, needle: &str) -> usize {
    text[..text.find(needle).expect("needle present")].matches('\n').count() + 1
}

fn invalid(text: &str) -> (String, usize, String) {
    match Model::from_toml(text) {
        Err(Error::Invalid { field, line, message }) => (field, line, message),
        other => panic!("expected an invalid-model error, got {other:?}"),
    }
}

#[test]
fn shipped_model_is_valid_and_its_id_is_stable() {
    let m = Model::cross_border_seller();
    assert_eq!(m.features().len(), 12);
    assert_eq!(m.parties(), ["platform", "logistics", "bank"]);
    assert_eq!(m.id().len(), 64);
    // Comments and layout do not change the id; semantics do.
    let reformatted =
        format!("# a comment\n{}", CROSS_BORDER_SELLER.replace("base_points = 420", "base_points    = 420"));
    assert_eq!(Model::from_toml(&reformatted).unwrap().id(), m.id());
    let changed = CROSS_BORDER_SELLER.replace("base_points = 420", "base_points = 421");
    assert_ne!(Model::from_toml(&changed).unwrap().id(), m.id());
    assert!(!m.reveals(Output::Score));
}

/// Asserts `text` is refused at `field`, on the line where `at` starts
/// (when given), with a message containing `says`.
fn assert_invalid(text: &str, field: &str, at: Option<&str>, says: &str) {
    let (got_field, line, msg) = invalid(text);
    assert_eq!(got_field, field, "{msg}");
    if let Some(at) = at {
        assert_eq!(line, line_of(text, at), "{msg}");
    }
    assert!(msg.contains(says), "{msg}");
}

#[test]
fn unknown_party_names_field_and_line() {
    let text = edited("party = \"logistics\"", "party = \"warehouse\"");
    assert_invalid(&text, "features[5].party", Some("party = \"warehouse\""), "warehouse");
}

#[test]
fn overlapping_gapped_and_short_bins_are_rejected() {
    let text = edited("  { max = 499, points = 5 },", "  { min = 90, max = 499, points = 5 },");
    assert_invalid(&text, "features[0].bins[1]", Some("{ min = 90"), "overlaps");
    let text = edited("  { max = 499, points = 5 },", "  { min = 150, max = 499, points = 5 },");
    assert_invalid(&text, "features[0].bins[1]", Some("{ min = 150"), "gap");
    let text = edited(
        "  { points = 15 },\n]\n\n[[features]]\nname = \"gmv_trend_pct\"",
        "  { max = 40000, points = 15 },\n]\n\n[[features]]\nname = \"gmv_trend_pct\"",
    );
    assert_invalid(&text, "features[0].bins", None, "range ends at 50000");
}

#[test]
fn line_formula_multiplying_two_features_is_rejected() {
    let text = edited(
        "formula = \"band_multiplier * gmv_12m_k / 12\"",
        "formula = \"band_multiplier * gmv_12m_k * overseas_stock_k / 12\"",
    );
    assert_invalid(&text, "credit_line.formula", Some("formula ="), "two encrypted values");
}

#[test]
fn forbidden_output_and_duplicate_feature_are_rejected() {
    let text = edited("reveal = [\"decision\",", "reveal = [\"gmv_12m_k\", \"decision\",");
    assert_invalid(&text, "outputs.reveal", Some("\"gmv_12m_k\", \"decision\""), "raw features are never outputs");
    let text = edited("name = \"gmv_trend_pct\"", "name = \"gmv_12m_k\"");
    let at = "name = \"gmv_12m_k\"\nparty = \"platform\"\nunit = \"percent";
    assert_invalid(&text, "features[1].name", Some(at), "duplicate");
}

#[test]
fn other_inconsistencies_are_rejected() {
    let cases = [
        ("format = \"jointscore.model.v1\"", "format = \"jointscore.model.v9\"", "format"),
        ("approve = 530", "approve = 490", "cutoffs"),
        ("when = [\"months_active < 6\"]", "when = [\"months_activ < 6\"]", "knockouts[0].when"),
        ("when = [\"months_active < 6\"]", "when = [\"months_active ~ 6\"]", "knockouts[0].when"),
        ("count = 2", "count = 3", "reasons.count"),
        ("min_score = 530", "min_score = 570", "bands[1]"),
        ("cap = 300", "cap = 302", "credit_line"),
        ("missing = { points = 5 }", "missing = { impute = 9999 }", "features[1].missing"),
        ("missing = \"reject\"", "missing = \"ignore\"", "features[0].missing"),
        ("band_multiplier * gmv_12m_k", "band_multiplier * band_multiplier * gmv_12m_k", "credit_line.formula"),
        ("gmv_12m_k / 12\"", "gmv_12m_k / 9999999999999\"", "credit_line.formula"),
        ("cap = 300", "cap = 3000000000000000", "credit_line"),
        ("base_points = 420", "base_points = 9999999999999", "base_points"),
    ];
    for (from, to, want) in cases {
        let (field, _, _) = invalid(&edited(from, to));
        assert_eq!(field, want, "{from} -> {to}");
    }
}

#[test]
fn syntax_errors_and_unknown_fields_report_the_parser_position() {
    let err = Model::from_toml("format = \"jointscore.model.v1\"\nname = \n").unwrap_err();
    assert!(matches!(err, Error::Parse(ref m) if m.contains("line 2")), "{err}");
    let err = Model::from_toml(&edited("base_points = 420", "base_points = 420\nbase_pionts = 1")).unwrap_err();
    assert!(matches!(err, Error::Parse(ref m) if m.contains("base_pionts")), "{err}");
}

// ---------------------------------------------------------------------------
// Writing models.

/// Writes `m`, reads it back, and checks that nothing that matters moved.
fn assert_round_trip(m: &Model) {
    let text = m.to_toml();
    let back = Model::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n--- written ---\n{text}"));
    assert_eq!(back.id(), m.id(), "{text}");
    assert_eq!(back.description(), m.description());
    let descriptions = |m: &Model| m.knockouts().iter().map(|k| k.description.clone()).collect::<Vec<_>>();
    assert_eq!(descriptions(&back), descriptions(m));
    assert_eq!(back.to_toml(), text, "writing is deterministic");
}

#[test]
fn every_shipped_model_round_trips() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let m = Model::from_toml(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_round_trip(&m);
            seen += 1;
        }
    }
    assert!(seen >= 1, "no model files in {dir}");
    let m = Model::cross_border_seller();
    let written = m.to_toml();
    assert!(written.starts_with("format = \"jointscore.model.v1\"\n"), "{written}");
    assert!(written.contains("Heavy refunds together with late repayments"), "{written}");
}

#[test]
fn variants_of_the_shipped_model_round_trip() {
    let variants = [
        // No credit line, no reasons, a score-revealing policy.
        edited(
            "[credit_line]\n# Months of average sales: multiplier x (12-month GMV / 12), in steps of 5k.\nformula = \"band_multiplier * gmv_12m_k / 12\"\ncap = 300\ngranularity = 5\nunit = \"thousand USD\"\n",
            "",
        )
        .replace("line_multiplier = 3\n", "")
        .replace("line_multiplier = 2\n", "")
        .replace("line_multiplier = 1\n", "")
        .replace("count = 2", "count = 0")
        .replace("reveal = [\"decision\", \"band\", \"rate_tier\", \"credit_line\", \"reasons\"]", "reveal = [\"score\"]"),
        // Defaults left out: reasons, outputs, reason texts, granularity.
        edited("[reasons]\ncount = 2\n", "")
            .replace("[outputs]\nreveal = [\"decision\", \"band\", \"rate_tier\", \"credit_line\", \"reasons\"]", "")
            .replace("reason = \"low sales volume\"\n", "")
            .replace("granularity = 5\n", "")
            .replace("cap = 300", "cap = 299")
            .replace("/ 12\"", "\""),
        // A categorical feature with awkward category names, imputed, in a
        // knock-out; explicit bin minimums; a negative range.
        edited(
            "name = \"major_violations\"\nparty = \"bank\"\nunit = \"compliance or fraud findings on record\"\nreason = \"compliance findings\"\nrange = [0, 9]\nmissing = \"reject\"\nbins = [\n  { max = 0, points = 15 },\n  { points = 0 },\n]",
            "name = \"major_violations\"\nparty = \"bank\"\nunit = \"finding class\"\ncategories = [\"none\", \"a > b\", 'say \"hi\"', \"x == y\", \"it's\"]\nmissing = { impute = \"a > b\" }\nbins = [\n  { categories = [\"none\", \"it's\"], points = 15 },\n  { categories = [\"x == y\", \"a > b\", 'say \"hi\"'], points = 0 },\n]",
        )
        .replace("when = [\"major_violations > 0\"]", "when = [\"major_violations != none\", 'major_violations != \"say \\\"hi\\\"\"']")
        .replace("{ max = -21, points = 0 },", "{ min = -100, max = -21, points = 0 },")
        .replace("missing = { points = 5 }\nbins = [\n  { min = -100", "missing = { impute = -7 }\nbins = [\n  { min = -100"),
    ];
    for text in &variants {
        let m = Model::from_toml(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_round_trip(&m);
    }
    let categorical = Model::from_toml(&variants[2]).unwrap();
    let f = categorical.feature_index("major_violations").unwrap();
    let ko = &categorical.knockouts()[1];
    assert_eq!((ko.when[0].feature, ko.when[0].op, ko.when[0].value), (f, CmpOp::Ne, 0));
    assert_eq!(ko.when[1].value, 2, "the quoted category is `say \"hi\"`");
    assert_eq!(categorical.features()[f].missing, Missing::Impute(1));
}

#[test]
fn conditions_read_without_spaces() {
    let a = Model::cross_border_seller();
    let b = Model::from_toml(&edited("when = [\"months_active < 6\"]", "when = [\"months_active<6\"]")).unwrap();
    assert_eq!(a.id(), b.id());
}

#[test]
fn with_reveal_makes_a_validated_variant_with_its_own_id() {
    let m = Model::cross_border_seller();
    let all = m.with_reveal(Output::ALL).unwrap();
    assert!(all.reveals(Output::Score));
    assert_ne!(all.id(), m.id());
    assert_eq!(all.features().len(), m.features().len());
    // Back to the original policy: the original id.
    assert_eq!(all.with_reveal(m.reveal().iter().copied()).unwrap().id(), m.id());
    // Still validated: no credit line means the line cannot be revealed.
    let mut file = m.to_file();
    file.credit_line = None;
    file.bands.iter_mut().for_each(|b| b.line_multiplier = 0);
    file.outputs = None;
    let lineless = Model::from_file(&file).unwrap();
    let err = lineless.with_reveal([Output::Decision, Output::CreditLine]).unwrap_err();
    assert!(matches!(err, Error::Invalid { ref field, .. } if field == "outputs.reveal"), "{err}");
    assert!(lineless.with_reveal([]).is_err(), "an empty policy reveals nothing");
}

/// A deterministic generator of valid model files (splitmix64), driven by
/// proptest's seeds: every draw is valid by construction.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `lo..=hi`.
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.int(0, items.len() as i64 - 1) as usize]
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

const NAMES: [&str; 7] = ["a", "b > c", "x == y", "'q'", "say \"hi\"", "(other)", "café"];
const TEXTS: [&str; 4] = ["", "plain", "with \"quotes\" and 'apostrophes'", "line\nbreak"];

fn random_file(seed: u64) -> file::Model {
    let mut g = Gen(seed);
    let parties: Vec<String> =
        ["platform", "log istics", "bänk \"x\""][..g.int(1, 3) as usize].iter().map(|p| p.to_string()).collect();
    let mut features = Vec::new();
    for i in 0..g.int(1, 4) {
        let name = format!("f{i}_{}", ["x", "y"][i as usize % 2]);
        let party = g.pick(&parties).clone();
        let (range, categories, bins, missing) = if g.coin() {
            let min = g.int(-1000, 1000);
            let max = min + g.int(0, 5000);
            let mut cuts: Vec<i64> = (0..g.int(0, 4)).map(|_| g.int(min, max)).filter(|&c| c < max).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut bins: Vec<file::Bin> = cuts
                .iter()
                .map(|&c| file::Bin { min: None, max: Some(c), categories: None, points: g.int(-50, 50) })
                .collect();
            bins.push(file::Bin { min: None, max: None, categories: None, points: g.int(-50, 50) });
            let missing = match g.int(0, 2) {
                0 => file::Missing::Reject,
                1 => file::Missing::Points(g.int(-50, 50)),
                _ => file::Missing::Impute(file::Value::Integer(g.int(min, max))),
            };
            (Some([min, max]), None, bins, missing)
        } else {
            let mut cats: Vec<String> = Vec::new();
            for _ in 0..g.int(1, 5) {
                let c = g.pick(&NAMES).to_string();
                if !cats.contains(&c) {
                    cats.push(c);
                }
            }
            let groups = g.int(1, cats.len() as i64) as usize;
            let bins = (0..groups)
                .map(|k| file::Bin {
                    min: None,
                    max: None,
                    categories: Some(cats.iter().skip(k).step_by(groups).cloned().collect()),
                    points: g.int(-50, 50),
                })
                .collect();
            let missing = match g.int(0, 2) {
                0 => file::Missing::Reject,
                1 => file::Missing::Points(g.int(-50, 50)),
                _ => file::Missing::Impute(file::Value::Category(g.pick(&cats).clone())),
            };
            (None, Some(cats), bins, missing)
        };
        let reason = g.coin().then(|| g.pick(&TEXTS).to_string());
        let unit = g.pick(&TEXTS).to_string();
        features.push(file::Feature { name, party, unit, reason, range, categories, missing, bins });
    }
    let mut knockouts = Vec::new();
    for k in 0..g.int(0, 2) {
        let when = (0..g.int(1, 2))
            .map(|_| {
                let f = g.pick(&features).clone();
                match &f.categories {
                    Some(cats) => {
                        let op = *g.pick(&[CmpOp::Eq, CmpOp::Ne]);
                        file::condition(&f.name, op, &file::Value::Category(g.pick(cats).clone()))
                    }
                    None => {
                        let op = *g.pick(&[CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge, CmpOp::Eq, CmpOp::Ne]);
                        file::condition(&f.name, op, &file::Value::Integer(g.int(-2000, 7000)))
                    }
                }
            })
            .collect();
        knockouts.push(file::Knockout { code: format!("KO{k}"), description: g.pick(&TEXTS).to_string(), when });
    }
    let line_feature = features
        .iter()
        .find(|f| f.range.is_some_and(|[min, _]| min >= 0) && !matches!(f.missing, file::Missing::Points(_)));
    let credit_line = line_feature.filter(|_| g.coin()).map(|f| {
        let granularity = g.int(1, 10) as u64;
        let divisor = g.int(1, 20);
        file::CreditLine {
            formula: if divisor == 1 {
                format!("band_multiplier * {}", f.name)
            } else {
                format!("band_multiplier * {} / {divisor}", f.name)
            },
            cap: granularity * g.int(1, 400) as u64,
            granularity,
            unit: g.pick(&TEXTS).to_string(),
        }
    });
    let mut bands = Vec::new();
    let mut min_score = g.int(500, 800);
    let n_bands = g.int(1, 4);
    for b in 0..n_bands {
        let last = b + 1 == n_bands;
        bands.push(file::Band {
            name: format!("band {b}"),
            min_score: (!last).then_some(min_score),
            rate_tier: g.pick(&TEXTS).to_string(),
            line_multiplier: if credit_line.is_some() { g.int(0, 5) as u32 } else { 0 },
        });
        min_score -= g.int(1, 50);
    }
    let refer = g.int(300, 600);
    let count = g.int(0, 2) as usize;
    let outputs = g.coin().then(|| {
        let mut reveal: Vec<Output> = Output::ALL
            .into_iter()
            .filter(|o| match o {
                Output::CreditLine => credit_line.is_some(),
                Output::Reasons => count > 0,
                _ => true,
            })
            .filter(|_| g.coin())
            .collect();
        if reveal.is_empty() {
            reveal.push(Output::Decision);
        }
        file::Outputs { reveal }
    });
    file::Model {
        name: format!("generated {seed}"),
        version: g.pick(&TEXTS).to_string(),
        description: g.pick(&TEXTS).to_string(),
        parties,
        base_points: g.int(-1000, 1000),
        features,
        knockouts,
        cutoffs: file::Cutoffs { approve: refer + g.int(0, 100), refer },
        bands,
        credit_line,
        reasons: g.coin().then_some(file::Reasons { count }),
        outputs,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any valid model, written and read back, has the same id, and writing
    /// is a fixed point after the first pass.
    #[test]
    fn written_models_read_back_with_the_same_id(seed in any::<u64>()) {
        let file = random_file(seed);
        let m = Model::from_file(&file).unwrap_or_else(|e| panic!("{e}\n{}", file.to_toml().unwrap()));
        assert_round_trip(&m);
        let again = Model::from_file(&m.to_file()).unwrap();
        prop_assert_eq!(again.id(), m.id());
    }
}
