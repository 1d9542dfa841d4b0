//! Asset identities for duplicate-financing checks, normalised so that
//! trivial variants of the same order, invoice or receipt number collide.

use std::fmt;

use crate::error::{Error, Result};

/// Kinds of financeable assets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AssetKind {
    /// A purchase or marketplace order.
    Order,
    /// An invoice.
    Invoice,
    /// A warehouse receipt.
    WarehouseReceipt,
    /// A bill of lading.
    BillOfLading,
}

impl AssetKind {
    fn parse(s: &str) -> Option<AssetKind> {
        let s: String = s.trim().to_lowercase().split_whitespace().collect::<Vec<_>>().join(" ");
        Some(match s.as_str() {
            "order" | "purchase order" | "po" => AssetKind::Order,
            "invoice" | "inv" => AssetKind::Invoice,
            "receipt" | "warehouse receipt" | "warehouse-receipt" | "wr" => AssetKind::WarehouseReceipt,
            "bill of lading" | "bill-of-lading" | "bl" | "b/l" => AssetKind::BillOfLading,
            _ => return None,
        })
    }

    fn tag(self) -> &'static str {
        match self {
            AssetKind::Order => "order",
            AssetKind::Invoice => "invoice",
            AssetKind::WarehouseReceipt => "warehouse-receipt",
            AssetKind::BillOfLading => "bill-of-lading",
        }
    }
}

/// Longest issuer name accepted, in characters.
pub const ISSUER_LIMIT: usize = 200;
/// Longest asset number accepted, in characters after normalisation.
pub const NUMBER_LIMIT: usize = 64;

/// A normalised asset identity: kind, issuer and number.
///
/// Normalisation: the kind accepts common aliases (`inv`, `po`, `wr`,
/// `b/l`, any case); the issuer is lower-cased with invisible format
/// characters removed, runs of white space collapsed and surrounding spaces
/// and dots trimmed; the number is lower-cased with spaces and the
/// separators `- _ / . #` removed and must then be ASCII letters and digits.
/// Issuers are not Unicode-normalised: give them in one canonical form (a
/// registration number is best), as look-alike spellings will not collide. So
/// `Invoice / ACME Trading / INV-0001` and `inv / acme  trading. / inv 0001`
/// are the same asset; leading zeros are kept (`0001` and `1` differ).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AssetId {
    kind: AssetKind,
    issuer: String,
    number: String,
}

impl fmt::Debug for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AssetId({}:{}:{})", self.kind.tag(), self.issuer, self.number)
    }
}

/// The normalised form, `kind:issuer:number` (what registries show).
impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind.tag(), self.issuer, self.number)
    }
}

impl AssetId {
    /// Normalises and checks an asset identity.
    pub fn new(kind: &str, issuer: &str, number: &str) -> Result<AssetId> {
        let bad = |m: String| Error::InvalidAsset(m);
        let kind = AssetKind::parse(kind).ok_or_else(|| {
            bad(format!(
                "unknown asset kind `{}`; use order, invoice, warehouse receipt or bill of lading",
                kind.trim()
            ))
        })?;
        // Invisible format characters (zero-width spaces and joiners, BOM)
        // would let the same issuer escape a match.
        let visible: String = issuer
            .chars()
            .filter(|c| !matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'))
            .collect();
        let issuer = visible.to_lowercase().split_whitespace().collect::<Vec<_>>().join(" ");
        let issuer = issuer.trim_matches(|c: char| c == '.' || c.is_whitespace()).to_string();
        if issuer.is_empty() || issuer.chars().count() > ISSUER_LIMIT {
            return Err(bad(format!("issuer must have 1 to {ISSUER_LIMIT} characters")));
        }
        let number: String = number
            .chars()
            .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '_' | '/' | '.' | '#'))
            .flat_map(char::to_lowercase)
            .collect();
        // ASCII only: look-alike letters and full-width digits from other
        // scripts must not make a second, unmatched copy of a number.
        if number.is_empty() || number.len() > NUMBER_LIMIT || !number.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad(format!(
                "number must have 1 to {NUMBER_LIMIT} ASCII letters or digits after removing separators"
            )));
        }
        Ok(AssetId { kind, issuer, number })
    }

    /// Parses `KIND:ISSUER:NUMBER` (the issuer may not contain `:`).
    pub fn parse(s: &str) -> Result<AssetId> {
        let mut parts = s.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(k), Some(i), Some(n)) => AssetId::new(k, i, n),
            _ => Err(Error::InvalidAsset("expected KIND:ISSUER:NUMBER".into())),
        }
    }

    /// The bytes a PSI session hashes: unambiguous (length-prefixed fields).
    pub fn key(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for field in [self.kind.tag(), &self.issuer, &self.number] {
            out.extend_from_slice(&(field.len() as u32).to_le_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }

    /// The asset kind.
    pub fn kind(&self) -> AssetKind {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trivial_variants_collide() {
        let a = AssetId::new("Invoice", " ACME   Trading ", "INV-0001").unwrap();
        let b = AssetId::new("inv", "acme trading.", "inv 0001").unwrap();
        let c = AssetId::parse("INVOICE:Acme Trading:inv/0001").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.key(), c.key());
        assert_eq!(AssetId::new("B/L", "Maersk", "MAEU 123").unwrap().kind(), AssetKind::BillOfLading);
        // Zero-width characters do not make a second issuer; kind tags parse.
        assert_eq!(
            AssetId::new("invoice", "ac\u{200B}me", "1").unwrap(),
            AssetId::new("invoice", "acme", "1").unwrap()
        );
        assert_eq!(AssetId::new("bill-of-lading", "x", "1").unwrap().kind(), AssetKind::BillOfLading);
    }

    #[test]
    fn different_assets_differ() {
        let a = AssetId::new("invoice", "acme", "0001").unwrap();
        for other in [
            AssetId::new("order", "acme", "0001").unwrap(),
            AssetId::new("invoice", "acme ltd", "0001").unwrap(),
            AssetId::new("invoice", "acme", "1").unwrap(),
        ] {
            assert_ne!(a.key(), other.key());
        }
        // Length prefixes keep field boundaries: no two splits share a key.
        assert_ne!(
            AssetId::new("invoice", "ab", "c1").unwrap().key(),
            AssetId::new("invoice", "a", "bc1").unwrap().key()
        );
    }

    #[test]
    fn bad_identities_are_refused() {
        for (k, i, n) in
            [("loan", "acme", "1"), ("invoice", " . ", "1"), ("invoice", "acme", "--/"), ("invoice", "acme", "a+b")]
        {
            assert!(matches!(AssetId::new(k, i, n), Err(Error::InvalidAsset(_))), "{k} {i} {n}");
        }
        assert!(AssetId::new("invoice", &"x".repeat(ISSUER_LIMIT + 1), "1").is_err());
        assert!(AssetId::new("invoice", "acme", &"9".repeat(NUMBER_LIMIT + 1)).is_err());
        assert!(AssetId::parse("invoice-acme-1").is_err());
        // Full-width digits are refused rather than silently not matching.
        assert!(AssetId::new("invoice", "acme", "\u{ff11}\u{ff12}").is_err());
    }
}
