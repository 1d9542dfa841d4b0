//! The study's plots as SVG text: ROC curves and score histograms.

use std::fmt::Write;

use crate::metrics::auc;

/// A curve to draw: its name, colour and risk scores (higher = more likely
/// bad), one per labelled row.
#[derive(Clone, Copy, Debug)]
pub struct Curve<'a> {
    /// Legend text.
    pub name: &'a str,
    /// SVG colour, e.g. `#3366cc`.
    pub colour: &'a str,
    /// Risk per row.
    pub scores: &'a [f64],
}

/// ROC curves of several scores against the same labels (true = bad), each
/// with its AUC in the legend.
pub fn roc_svg(curves: &[Curve<'_>], bad: &[bool]) -> String {
    let size = 400.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"460\" height=\"460\" viewBox=\"-40 -20 460 460\" font-family=\"sans-serif\" font-size=\"12\">\n<rect x=\"0\" y=\"0\" width=\"{size}\" height=\"{size}\" fill=\"none\" stroke=\"#888\"/>\n<line x1=\"0\" y1=\"{size}\" x2=\"{size}\" y2=\"0\" stroke=\"#ccc\" stroke-dasharray=\"4\"/>\n<text x=\"150\" y=\"430\">false positive rate</text>\n<text x=\"-30\" y=\"200\" transform=\"rotate(-90 -30 200)\">true positive rate</text>\n"
    );
    let pos = bad.iter().filter(|&&b| b).count().max(1) as f64;
    let neg = (bad.len() as f64 - pos).max(1.0);
    for (k, curve) in curves.iter().enumerate() {
        let scores = curve.scores;
        let mut idx: Vec<usize> = (0..scores.len().min(bad.len())).collect();
        idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let (mut tp, mut fp) = (0.0, 0.0);
        let mut points = String::from("0,400");
        for (k, &i) in idx.iter().enumerate() {
            if bad[i] {
                tp += 1.0
            } else {
                fp += 1.0
            }
            // One point per distinct score: tied rows move together.
            if idx.get(k + 1).is_none_or(|&n| !scores[n].total_cmp(&scores[i]).is_eq()) {
                let _ = write!(points, " {:.1},{:.1}", fp / neg * size, size - tp / pos * size);
            }
        }
        let colour = curve.colour;
        let _ = writeln!(svg, "<polyline points=\"{points}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>");
        let auc = auc(scores, bad).map_or_else(|_| "n/a".to_string(), |a| format!("{a:.3}"));
        let _ =
            writeln!(svg, "<text x=\"220\" y=\"{}\" fill=\"{colour}\">{}: AUC {auc}</text>", 340 + 18 * k, curve.name);
    }
    svg.push_str("</svg>\n");
    svg
}

/// Score histograms of good and bad rows, side by side in 20 buckets; the
/// `reference` model's scores of the same rows (on the same points scale;
/// empty for none) drawn over them as dashed outlines.
pub fn distribution_svg(scores: &[i64], reference: &[i64], bad: &[bool]) -> String {
    let all = scores.iter().chain(reference);
    let (lo, hi) = (all.clone().min().copied().unwrap_or(0), all.max().copied().unwrap_or(1));
    let buckets = 20usize;
    let width = ((hi - lo) as f64 / buckets as f64).max(1.0);
    let histogram = |values: &[i64]| {
        let mut counts = vec![[0u32; 2]; buckets];
        for (&s, &b) in values.iter().zip(bad) {
            let k = (((s - lo) as f64 / width) as usize).min(buckets - 1);
            counts[k][usize::from(b)] += 1;
        }
        counts
    };
    let (counts, theirs) = (histogram(scores), histogram(reference));
    let top = counts.iter().chain(&theirs).flat_map(|c| c.iter()).copied().max().unwrap_or(1).max(1) as f64;
    let legend = if reference.is_empty() { "" } else { "; reference LR dashed" };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"520\" height=\"320\" font-family=\"sans-serif\" font-size=\"12\">\n<text x=\"20\" y=\"16\">test scores: good (blue), bad (red){legend}</text>\n",
    );
    for (k, c) in counts.iter().enumerate() {
        for (side, colour) in [(0usize, "#3366cc"), (1, "#cc3333")] {
            let h = f64::from(c[side]) / top * 250.0;
            let x = 20.0 + k as f64 * 24.0 + side as f64 * 11.0;
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"10\" height=\"{h:.1}\" fill=\"{colour}\"/>",
                290.0 - h
            );
        }
    }
    if !reference.is_empty() {
        for (side, colour) in [(0usize, "#1a3366"), (1, "#661a1a")] {
            let mut points = String::new();
            for (k, c) in theirs.iter().enumerate() {
                let y = 290.0 - f64::from(c[side]) / top * 250.0;
                let x = 20.0 + k as f64 * 24.0;
                let _ = write!(points, "{x:.1},{y:.1} {:.1},{y:.1} ", x + 22.0);
            }
            let _ = writeln!(
                svg,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-dasharray=\"4\" stroke-width=\"1.5\"/>",
                points.trim_end()
            );
        }
    }
    let _ = writeln!(svg, "<text x=\"20\" y=\"308\">{lo}</text><text x=\"470\" y=\"308\">{hi}</text>\n</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_has_one_point_per_distinct_score_and_the_auc() {
        let bad = [false, false, true, true];
        let svg = roc_svg(&[Curve { name: "m", colour: "#000", scores: &[0.1, 0.4, 0.35, 0.8] }], &bad);
        assert!(svg.contains("points=\"0,400 0.0,200.0 200.0,200.0 200.0,0.0 400.0,0.0\""), "{svg}");
        assert!(svg.contains("m: AUC 0.750"), "{svg}");
        let one_class = roc_svg(&[Curve { name: "m", colour: "#000", scores: &[0.1, 0.2] }], &[true, true]);
        assert!(one_class.contains("m: AUC n/a"), "{one_class}");
    }

    #[test]
    fn histogram_counts_each_class() {
        let svg = distribution_svg(&[500, 500, 600], &[], &[false, true, true]);
        assert_eq!(svg.matches("<rect").count(), 40);
        assert_eq!(svg.matches("<polyline").count(), 0);
        assert!(svg.contains(">500</text>") && svg.contains(">600</text>"), "{svg}");
        // The reference's outlines, over the range of both.
        let svg = distribution_svg(&[500, 500, 600], &[450, 520, 610], &[false, true, true]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">450</text>") && svg.contains(">610</text>") && svg.contains("reference LR"), "{svg}");
    }
}
