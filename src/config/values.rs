//! Small value types of the configuration language and their parsers: durations, dotted
//! versions, times of day, percentages and backup references. Each parser returns a message
//! written for the operator; the caller attaches the location.

use std::cmp::Ordering;
use std::fmt;

use chrono::{NaiveDate, NaiveTime};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A duration written as `<n><unit>` with unit `s`, `m`, `h`, `d`, `w` or `y` (365 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Dur {
    secs: u64,
}

const UNITS: [(char, u64); 6] = [
    ('y', 365 * 86_400),
    ('w', 7 * 86_400),
    ('d', 86_400),
    ('h', 3_600),
    ('m', 60),
    ('s', 1),
];

impl Dur {
    pub const fn from_secs(secs: u64) -> Self {
        Dur { secs }
    }
    pub const fn as_secs(self) -> u64 {
        self.secs
    }
    pub fn to_chrono(self) -> chrono::Duration {
        chrono::Duration::seconds(self.secs.min(i64::MAX as u64 / 1000) as i64)
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let hint =
            "write a whole number followed by one unit: `30s`, `10m`, `12h`, `3d`, `2w` or `3y`";
        let s = s.trim();
        let Some(unit) = s.chars().last() else {
            return Err(format!("empty duration; {hint}"));
        };
        let Some(&(_, mult)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(format!("`{s}` has no known unit; {hint}"));
        };
        let digits = &s[..s.len() - 1];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("`{s}` is not a duration; {hint}"));
        }
        let n: u64 = digits.parse().map_err(|_| format!("`{s}` is too large"))?;
        let secs = n
            .checked_mul(mult)
            .filter(|v| *v <= 1_000 * 365 * 86_400)
            .ok_or_else(|| format!("`{s}` is longer than 1000 years"))?;
        if secs == 0 {
            return Err(format!("`{s}` is zero; a duration must be positive"));
        }
        Ok(Dur { secs })
    }
}

impl fmt::Display for Dur {
    /// The largest unit that divides the duration exactly, so `72h` prints as `3d`. Weeks are
    /// not used, so `7d` stays `7d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (u, mult) in UNITS.into_iter().filter(|(u, _)| *u != 'w') {
            if self.secs.is_multiple_of(mult) {
                return write!(f, "{}{}", self.secs / mult, u);
            }
        }
        unreachable!("seconds divide everything")
    }
}

impl From<Dur> for String {
    fn from(d: Dur) -> String {
        d.to_string()
    }
}
impl TryFrom<String> for Dur {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Dur::parse(&s)
    }
}

/// How long backups in a storage are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Retention {
    Forever,
    For(Dur),
}

impl Retention {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "forever" {
            return Ok(Retention::Forever);
        }
        Dur::parse(s)
            .map(Retention::For)
            .map_err(|e| format!("{e}, or `forever`"))
    }
    pub fn duration(self) -> Option<Dur> {
        match self {
            Retention::Forever => None,
            Retention::For(d) => Some(d),
        }
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::Forever => f.write_str("forever"),
            Retention::For(d) => d.fmt(f),
        }
    }
}
impl From<Retention> for String {
    fn from(r: Retention) -> String {
        r.to_string()
    }
}
impl TryFrom<String> for Retention {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Retention::parse(&s)
    }
}

/// A dotted version such as `9.0` or `8.10.2`, compared numerically component by component
/// (`8.10` > `8.9`, and `9.0` == `9`). The text is kept as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Version {
    text: String,
    parts: Vec<u64>,
}

impl Version {
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Option<Vec<u64>> = s
            .split('.')
            .map(|p| {
                if !p.is_empty() && p.len() <= 18 && p.bytes().all(|b| b.is_ascii_digit()) {
                    p.parse().ok()
                } else {
                    None
                }
            })
            .collect();
        match parts {
            Some(parts) => Ok(Version {
                text: s.to_string(),
                parts,
            }),
            None => Err(format!(
                "`{s}` is not a dotted version; write numbers separated by dots, like `9.0` or `8.10.2`"
            )),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        (0..n)
            .map(|i| {
                let a = self.parts.get(i).copied().unwrap_or(0);
                let b = other.parts.get(i).copied().unwrap_or(0);
                a.cmp(&b)
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Version {}
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
impl From<Version> for String {
    fn from(v: Version) -> String {
        v.text
    }
}
impl TryFrom<String> for Version {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Version::parse(&s)
    }
}

/// `HH:MM`, 24-hour clock.
pub fn parse_time_of_day(s: &str) -> Result<NaiveTime, String> {
    let bad =
        || format!("`{s}` is not a time of day; write `HH:MM` on a 24-hour clock, like `02:00`");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    NaiveTime::from_hms_opt(h, m, 0).ok_or_else(bad)
}

/// A share of the repository such as `5%` (0 < p <= 100).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percent(pub f64);

impl Percent {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad =
            || format!("`{s}` is not a percentage; write a number followed by `%`, like `5%`");
        let n = s.strip_suffix('%').ok_or_else(bad)?;
        let v: f64 = n.trim().parse().map_err(|_| bad())?;
        if !v.is_finite() {
            return Err(bad());
        }
        if v <= 0.0 || v > 100.0 {
            return Err(format!(
                "`{s}` is outside the range: the share must be above 0% and at most 100%"
            ));
        }
        Ok(Percent(v))
    }
}
impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// Names of instances, backups, restores and storages: what can appear in an address and in a
/// backup reference without ambiguity.
pub fn check_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a valid name; use 1 to 64 letters, digits, `-`, `_` or `.`, starting with a letter or digit"
        ))
    }
}

/// Which backup a restore (or a CLI argument) means. See SPEC section 2, "Backup references".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum BackupRef {
    /// `<instance>/<backup-key>`
    OnDemand { instance: String, key: String },
    /// `<instance>@latest`
    Latest { instance: String },
    /// `<instance>@daily:YYYY-MM-DD`
    Daily { instance: String, date: NaiveDate },
    /// `<instance>@pre-update:<version>`
    PreUpdate { instance: String, version: Version },
    /// a backup's UUID
    Id { id: Uuid },
}

impl BackupRef {
    pub fn parse(s: &str) -> Result<Self, String> {
        let forms = "write `<instance>/<backup-key>`, `<instance>@latest`, `<instance>@daily:YYYY-MM-DD`, `<instance>@pre-update:<version>` or a backup UUID";
        if let Ok(id) = Uuid::parse_str(s) {
            return Ok(BackupRef::Id { id });
        }
        let named = |inst: &str| check_name(inst).map(|()| inst.to_string());
        if let Some((inst, key)) = s.split_once('/') {
            let instance = named(inst)?;
            check_name(key)?;
            return Ok(BackupRef::OnDemand {
                instance,
                key: key.to_string(),
            });
        }
        if let Some((inst, sel)) = s.split_once('@') {
            let instance = named(inst)?;
            if sel == "latest" {
                return Ok(BackupRef::Latest { instance });
            }
            if let Some(d) = sel.strip_prefix("daily:") {
                let date = NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                    format!("`{d}` is not a date; write `YYYY-MM-DD`, like `2026-11-26`")
                })?;
                return Ok(BackupRef::Daily { instance, date });
            }
            if let Some(v) = sel.strip_prefix("pre-update:") {
                return Ok(BackupRef::PreUpdate {
                    instance,
                    version: Version::parse(v)?,
                });
            }
            return Err(format!("`@{sel}` is not a known selector; {forms}"));
        }
        Err(format!("`{s}` is not a backup reference; {forms}"))
    }

    /// The instance the reference names, when it names one.
    pub fn instance(&self) -> Option<&str> {
        match self {
            BackupRef::OnDemand { instance, .. }
            | BackupRef::Latest { instance }
            | BackupRef::Daily { instance, .. }
            | BackupRef::PreUpdate { instance, .. } => Some(instance),
            BackupRef::Id { .. } => None,
        }
    }
}

impl fmt::Display for BackupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupRef::OnDemand { instance, key } => write!(f, "{instance}/{key}"),
            BackupRef::Latest { instance } => write!(f, "{instance}@latest"),
            BackupRef::Daily { instance, date } => write!(f, "{instance}@daily:{date}"),
            BackupRef::PreUpdate { instance, version } => {
                write!(f, "{instance}@pre-update:{version}")
            }
            BackupRef::Id { id } => write!(f, "{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_in_the_largest_exact_unit() {
        assert_eq!(Dur::parse("30s").unwrap().as_secs(), 30);
        assert_eq!(Dur::parse("3d").unwrap().as_secs(), 3 * 86_400);
        assert_eq!(Dur::parse("72h").unwrap().to_string(), "3d");
        assert_eq!(Dur::parse("3y").unwrap().to_string(), "3y");
        assert_eq!(Dur::parse("1w").unwrap().to_string(), "7d");
        for bad in ["", "3", "d", "3 days", "-3d", "0d", "1.5h", "99999999999y"] {
            assert!(Dur::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn versions_compare_numerically() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("8.10") > v("8.9"));
        assert!(v("9.0") > v("8.10.2"));
        assert_eq!(v("9"), v("9.0"));
        assert!(v("8.1") >= v("8.1"));
        for bad in ["", "9.", ".9", "9.x", "v9", "9..1"] {
            assert!(Version::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn times_of_day_are_hh_mm() {
        assert_eq!(
            parse_time_of_day("02:00").unwrap(),
            NaiveTime::from_hms_opt(2, 0, 0).unwrap()
        );
        for bad in ["2:00", "24:00", "12:60", "noon", "12:00:00"] {
            assert!(parse_time_of_day(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn backup_references_cover_every_form() {
        let r = |s| BackupRef::parse(s).unwrap();
        assert_eq!(
            r("contoso/before-import"),
            BackupRef::OnDemand {
                instance: "contoso".into(),
                key: "before-import".into()
            }
        );
        assert_eq!(
            r("contoso@latest"),
            BackupRef::Latest {
                instance: "contoso".into()
            }
        );
        assert!(matches!(
            r("contoso@daily:2026-11-26"),
            BackupRef::Daily { .. }
        ));
        assert!(matches!(
            r("contoso@pre-update:9.1"),
            BackupRef::PreUpdate { .. }
        ));
        assert!(matches!(
            r("6f1c2a8e-5d1b-4c1e-9a8e-0c1f2b3d4e5f"),
            BackupRef::Id { .. }
        ));
        for bad in [
            "contoso",
            "contoso@daily:2026-13-01",
            "contoso@yesterday",
            "/x",
            "a/b/c",
        ] {
            assert!(BackupRef::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            r("contoso@daily:2026-11-26").to_string(),
            "contoso@daily:2026-11-26"
        );
    }
}
