//! Bounce rules: an ordered, operator-editable list of reply-text patterns.
//!
//! A rule matches when one of its patterns (case-insensitive substrings or regular
//! expressions) is found in the reply text and its optional constraints hold: the
//! reply code (`550`, `55x`, `5xx`) and the enhanced status prefix (`5.7`, `x.1.1`).
//! The first matching rule decides the reason; without one, the enhanced status code
//! decides, then the basic reply code ([`Rules::decide`] says which did).
//!
//! All patterns are compiled once into one [`RegexSet`], so classifying a reply is a
//! single pass over its text whatever the number of rules. The file format is
//! documented in `bounce/src/rules.toml`, the shipped defaults.

use crate::classify::{Classification, reason_from_code, reason_from_status};
use maily_engine::BounceClass;
use maily_engine::reply::{EnhancedStatus, Reason, SmtpReply};
use regex::{RegexBuilder, RegexSet, RegexSetBuilder};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

/// The shipped rules (`bounce/src/rules.toml`), embedded.
pub const DEFAULT_RULES_TOML: &str = include_str!("rules.toml");

/// Classifies a negative SMTP reply received during delivery with the shipped rules
/// ([`Rules::defaults`]).
pub fn classify_reply(reply: &SmtpReply) -> Classification {
    Rules::defaults().classify(reply)
}

/// Limit on one compiled pattern and on the compiled set, so a hostile rules file
/// cannot exhaust memory.
const SIZE_LIMIT: usize = 16 << 20;

/// Room for the lazy DFA that matches the whole set in one pass. The default (2 MiB)
/// is too small for a set this size: the DFA keeps clearing its cache and falls back
/// to a much slower engine.
const DFA_CACHE_LIMIT: usize = 32 << 20;

static DEFAULTS: LazyLock<Rules> =
    LazyLock::new(|| match Rules::parse(DEFAULT_RULES_TOML, false) {
        Ok(rules) => rules,
        // Unreachable: `shipped_rules_parse` tests the embedded file.
        Err(e) => panic!("the shipped bounce rules are invalid: {e}"),
    });

/// One way a rule recognises a reply text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// A case-insensitive substring.
    Contains(String),
    /// A regular expression, case-insensitive unless it says `(?-i)`.
    Regex(String),
}

/// A reply-code constraint: three positions, each a digit or any (`x`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeMatch([Option<u8>; 3]);

impl CodeMatch {
    /// Parses `550`, `55x` or `5xx`.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.trim().as_bytes();
        if b.len() != 3 || !matches!(b[0], b'2'..=b'5') {
            return None;
        }
        let mut digits = [None; 3];
        for (slot, &c) in digits.iter_mut().zip(b) {
            *slot = match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'x' | b'X' => None,
                _ => return None,
            };
        }
        Some(CodeMatch(digits))
    }

    /// Whether `code` fits.
    pub fn matches(&self, code: u16) -> bool {
        let digits = [code / 100 % 10, code / 10 % 10, code % 10];
        code < 1000
            && self
                .0
                .iter()
                .zip(digits)
                .all(|(want, got)| want.is_none_or(|w| u16::from(w) == got))
    }
}

impl fmt::Display for CodeMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in self.0 {
            match d {
                Some(d) => write!(f, "{d}")?,
                None => f.write_str("x")?,
            }
        }
        Ok(())
    }
}

/// An enhanced status constraint: one to three dot-separated components, each a
/// number or any (`x`), compared component by component (`5.7` matches `5.7.26`,
/// `5.7.1` does not match `5.7.10`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMatch(Vec<Option<u16>>);

impl StatusMatch {
    /// Parses `5`, `5.7`, `5.7.1`, `x.1.1` and the like.
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<Option<u16>> = s
            .trim()
            .split('.')
            .map(|p| match p {
                "x" | "X" => Some(None),
                _ if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().ok().map(Some)
                }
                _ => None,
            })
            .collect::<Option<_>>()?;
        if parts.len() > 3 || parts[0].is_some_and(|c| !matches!(c, 2 | 4 | 5)) {
            return None;
        }
        Some(StatusMatch(parts))
    }

    /// Whether `status` starts with this prefix.
    pub fn matches(&self, status: EnhancedStatus) -> bool {
        let got = [u16::from(status.class), status.subject, status.detail];
        self.0
            .iter()
            .zip(got)
            .all(|(want, got)| want.is_none_or(|w| w == got))
    }
}

impl fmt::Display for StatusMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            match c {
                Some(c) => write!(f, "{c}")?,
                None => f.write_str("x")?,
            }
        }
        Ok(())
    }
}

/// One rule: patterns, constraints and the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: Option<String>,
    /// Any one matching is enough.
    pub patterns: Vec<Pattern>,
    pub code: Option<CodeMatch>,
    pub status: Option<StatusMatch>,
    pub reason: Reason,
    /// For permanent (5xx) replies; `None` means hard exactly when [`Reason::is_hard`].
    pub class: Option<BounceClass>,
}

impl Rule {
    fn admits(&self, reply: &SmtpReply) -> bool {
        self.code.is_none_or(|c| c.matches(reply.code))
            && self
                .status
                .as_ref()
                .is_none_or(|s| reply.enhanced.is_some_and(|e| s.matches(e)))
    }
}

/// What is wrong with one rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleProblem {
    #[error("{0}")]
    Shape(String),
    #[error("it has no `contains` or `regex` pattern")]
    NoPattern,
    #[error("it has an empty pattern, which would match every reply")]
    EmptyPattern,
    #[error("regex {pattern:?} does not compile: {message}")]
    BadRegex { pattern: String, message: String },
    #[error(
        "reason {0:?} is not one of Sisimai's reasons (userunknown, mailboxfull, blocked, ...)"
    )]
    UnknownReason(String),
    #[error("class {0:?} is neither \"hard\" nor \"soft\"")]
    BadClass(String),
    #[error("code {0:?} is not a reply code such as 550, \"55x\" or \"5xx\"")]
    BadCode(String),
    #[error("status {0:?} is not an enhanced status prefix such as \"5.7\" or \"5.1.1\"")]
    BadStatus(String),
}

/// Why a rules file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error("bounce rules are not valid TOML: {0}")]
    Toml(String),
    #[error(
        "bounce rule {number}{}: {problem}",
        .name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
    )]
    Rule {
        /// Position in the file's `[[rule]]` list, from 0.
        index: usize,
        /// Position from 1, as people count.
        number: usize,
        name: Option<String>,
        problem: RuleProblem,
    },
    #[error("bounce rules are too large to compile together: {0}")]
    TooLarge(String),
}

/// What decided a classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The rule at this index of [`Rules::rules`].
    Rule(usize),
    /// No rule matched; the enhanced status code decided.
    Status(EnhancedStatus),
    /// Neither a rule nor the enhanced status code; the basic reply code decided.
    Code(u16),
}

/// A classification and what decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub classification: Classification,
    pub basis: Basis,
}

/// An ordered list of bounce rules, compiled.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
    set: RegexSet,
    /// The rule each pattern of `set` belongs to, non-decreasing.
    owner: Vec<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    include_defaults: bool,
    #[serde(default)]
    rule: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCode {
    Number(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    #[allow(dead_code)] // read from the table before deserialising, to name the rule
    name: Option<String>,
    contains: Option<OneOrMany>,
    regex: Option<OneOrMany>,
    code: Option<RawCode>,
    status: Option<String>,
    reason: String,
    class: Option<String>,
}

impl Rules {
    /// The shipped rules (`bounce/src/rules.toml`), compiled once.
    pub fn defaults() -> &'static Rules {
        &DEFAULTS
    }

    /// No rules: only the enhanced status and reply codes classify.
    pub fn empty() -> Rules {
        Rules {
            rules: Vec::new(),
            set: RegexSet::empty(),
            owner: Vec::new(),
        }
    }

    /// Parses and compiles a rules file. With `include_defaults = true` at its top, the
    /// shipped rules are checked after the file's own.
    pub fn from_toml(toml: &str) -> Result<Rules, RulesError> {
        Self::parse(toml, true)
    }

    /// Compiles rules given as values, in order.
    pub fn from_rules(rules: Vec<Rule>) -> Result<Rules, RulesError> {
        let mut patterns = Vec::new();
        let mut owner = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let fail = |problem| RulesError::Rule {
                index,
                number: index + 1,
                name: rule.name.clone(),
                problem,
            };
            if rule.patterns.is_empty() {
                return Err(fail(RuleProblem::NoPattern));
            }
            for p in &rule.patterns {
                let source = match p {
                    Pattern::Contains(s) if s.is_empty() => {
                        return Err(fail(RuleProblem::EmptyPattern));
                    }
                    Pattern::Contains(s) => Cow::Owned(regex::escape(s)),
                    Pattern::Regex(r) => {
                        let compiled = RegexBuilder::new(r)
                            .case_insensitive(true)
                            .size_limit(SIZE_LIMIT)
                            .build()
                            .map_err(|e| {
                                fail(RuleProblem::BadRegex {
                                    pattern: r.clone(),
                                    message: e.to_string(),
                                })
                            })?;
                        if compiled.is_match("") {
                            return Err(fail(RuleProblem::EmptyPattern));
                        }
                        Cow::Borrowed(r.as_str())
                    }
                };
                patterns.push(source);
                owner.push(index);
            }
        }
        let set = RegexSetBuilder::new(&patterns)
            .case_insensitive(true)
            .size_limit(SIZE_LIMIT)
            .dfa_size_limit(DFA_CACHE_LIMIT)
            .build()
            .map_err(|e| RulesError::TooLarge(e.to_string()))?;
        Ok(Rules { rules, set, owner })
    }

    fn parse(toml: &str, allow_include: bool) -> Result<Rules, RulesError> {
        let file: RawFile = toml::from_str(toml).map_err(|e| RulesError::Toml(e.to_string()))?;
        if file.include_defaults && !allow_include {
            return Err(RulesError::Toml(
                "the shipped rules cannot include themselves".into(),
            ));
        }
        let mut rules = Vec::with_capacity(file.rule.len());
        for (index, table) in file.rule.into_iter().enumerate() {
            let name = table
                .get("name")
                .and_then(|n| n.as_str())
                .map(str::to_string);
            let fail = |problem| RulesError::Rule {
                index,
                number: index + 1,
                name: name.clone(),
                problem,
            };
            let raw: RawRule = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| fail(RuleProblem::Shape(e.message().to_string())))?;
            let mut patterns: Vec<Pattern> = raw
                .contains
                .map(OneOrMany::into_vec)
                .unwrap_or_default()
                .into_iter()
                .map(Pattern::Contains)
                .collect();
            patterns.extend(
                raw.regex
                    .map(OneOrMany::into_vec)
                    .unwrap_or_default()
                    .into_iter()
                    .map(Pattern::Regex),
            );
            let code = match raw.code {
                None => None,
                Some(RawCode::Number(n)) => Some(
                    CodeMatch::parse(&n.to_string())
                        .ok_or_else(|| fail(RuleProblem::BadCode(n.to_string())))?,
                ),
                Some(RawCode::Text(t)) => {
                    Some(CodeMatch::parse(&t).ok_or_else(|| fail(RuleProblem::BadCode(t)))?)
                }
            };
            let status = match raw.status {
                None => None,
                Some(s) => {
                    Some(StatusMatch::parse(&s).ok_or_else(|| fail(RuleProblem::BadStatus(s)))?)
                }
            };
            let reason = raw
                .reason
                .parse::<Reason>()
                .map_err(|e| fail(RuleProblem::UnknownReason(e.0)))?;
            let class = match raw.class.as_deref().map(str::trim) {
                None => None,
                Some(c) if c.eq_ignore_ascii_case("hard") => Some(BounceClass::Hard),
                Some(c) if c.eq_ignore_ascii_case("soft") => Some(BounceClass::Soft),
                Some(c) => return Err(fail(RuleProblem::BadClass(c.to_string()))),
            };
            rules.push(Rule {
                name,
                patterns,
                code,
                status,
                reason,
                class,
            });
        }
        if file.include_defaults {
            rules.extend(Rules::defaults().rules.iter().cloned());
        }
        Self::from_rules(rules)
    }

    /// The rules, in the order they are checked.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Classifies a negative reply: rule, then enhanced status, then reply code.
    pub fn classify(&self, reply: &SmtpReply) -> Classification {
        self.decide(reply).classification
    }

    /// Classifies a negative reply and says which level decided.
    pub fn decide(&self, reply: &SmtpReply) -> Decision {
        if let Some(index) = self.matching_rule(reply) {
            let rule = &self.rules[index];
            return Decision {
                classification: verdict(reply, rule.reason, rule.class),
                basis: Basis::Rule(index),
            };
        }
        if let Some((status, reason)) = reply
            .enhanced
            .and_then(|e| reason_from_status(e).map(|r| (e, r)))
        {
            return Decision {
                classification: verdict(reply, reason, None),
                basis: Basis::Status(status),
            };
        }
        Decision {
            classification: verdict(reply, reason_from_code(reply.code), None),
            basis: Basis::Code(reply.code),
        }
    }

    /// The first rule that matches the reply, without falling back to status or code.
    pub fn find(&self, reply: &SmtpReply) -> Option<&Rule> {
        self.matching_rule(reply).map(|i| &self.rules[i])
    }

    fn matching_rule(&self, reply: &SmtpReply) -> Option<usize> {
        if self.rules.is_empty() {
            return None;
        }
        // Matched on at most MATCH_LIMIT bytes, non-ASCII replaced by spaces: the rules
        // are about ASCII wording, and with ASCII input the regex engine keeps to its
        // fast automata even for Unicode word boundaries (non-ASCII bytes would force
        // a slow fallback, milliseconds for a few kilobytes of crafted text).
        let ascii: String = reply
            .text
            .chars()
            .take(MATCH_LIMIT)
            .map(|c| if c.is_ascii() { c } else { ' ' })
            .collect();
        let text = collapse_whitespace(&ascii);
        // Pattern indices come in ascending order and so do their rules: the first
        // rule whose constraints hold is the first in file order.
        self.set
            .matches(&text)
            .into_iter()
            .map(|p| self.owner[p])
            .find(|&r| self.rules[r].admits(reply))
    }
}

/// Characters of a reply's text that rules are matched against.
const MATCH_LIMIT: usize = 2048;

/// A temporary failure is never hard, whatever the rule says.
fn verdict(reply: &SmtpReply, reason: Reason, class: Option<BounceClass>) -> Classification {
    let class = if !reply.is_permanent() {
        BounceClass::Soft
    } else {
        class.unwrap_or(if reason.is_hard() {
            BounceClass::Hard
        } else {
            BounceClass::Soft
        })
    };
    Classification { reason, class }
}

fn collapse_whitespace(text: &str) -> Cow<'_, str> {
    let needs = text
        .as_bytes()
        .windows(2)
        .any(|w| w[0].is_ascii_whitespace() && w[1].is_ascii_whitespace())
        || text.bytes().any(|b| b.is_ascii_whitespace() && b != b' ');
    if !needs {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.split_ascii_whitespace().collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use maily_engine::reply::Category;

    fn reply(code: u16, text: &str) -> SmtpReply {
        SmtpReply::new(code, text)
    }

    #[test]
    fn shipped_rules_parse() {
        let rules = Rules::parse(DEFAULT_RULES_TOML, false).unwrap();
        assert!(rules.len() > 30);
        assert!(rules.rules().iter().all(|r| r.name.is_some()));
    }

    #[test]
    fn precedence_rule_then_status_then_code() {
        let rules = Rules::from_toml(
            r#"
            [[rule]]
            name = "custom"
            contains = "frobnicated"
            reason = "policyviolation"
            "#,
        )
        .unwrap();
        // A rule beats the enhanced status code.
        let d = rules.decide(&reply(550, "5.1.1 mailbox frobnicated"));
        assert_eq!(d.basis, Basis::Rule(0));
        assert_eq!(d.classification.reason, Reason::PolicyViolation);
        assert_eq!(d.classification.class, BounceClass::Soft);
        // No rule: the enhanced status code.
        let d = rules.decide(&reply(550, "5.1.1 go away"));
        assert_eq!(
            d.basis,
            Basis::Status(EnhancedStatus::parse("5.1.1").unwrap())
        );
        assert_eq!(d.classification.reason, Reason::UserUnknown);
        assert_eq!(d.classification.class, BounceClass::Hard);
        // A status code that implies nothing falls through to the reply code.
        let d = rules.decide(&reply(552, "5.0.0 go away"));
        assert_eq!(d.basis, Basis::Code(552));
        assert_eq!(d.classification.reason, Reason::MailboxFull);
        let d = rules.decide(&reply(554, "go away"));
        assert_eq!(
            (d.basis, d.classification.reason),
            (Basis::Code(554), Reason::Rejected)
        );
        let d = Rules::empty().decide(&reply(499, "x"));
        assert_eq!(d.classification.reason, Reason::Undefined);
    }

    #[test]
    fn first_matching_rule_wins_and_constraints_apply() {
        let rules = Rules::from_toml(
            r#"
            [[rule]]
            name = "only-4xx"
            contains = "busy"
            code = "4xx"
            reason = "toomanyconn"

            [[rule]]
            name = "only-5.7"
            regex = 'busy|policy'
            status = "5.7"
            reason = "policyviolation"
            class = "hard"

            [[rule]]
            name = "exact"
            contains = ["busy", "other"]
            code = 550
            reason = "blocked"

            [[rule]]
            regex = '(?-i)CaseSensitive'
            reason = "syntaxerror"
            "#,
        )
        .unwrap();
        let d = |code, text: &str| rules.decide(&reply(code, text));
        assert_eq!(d(421, "4.3.2 server BUSY").basis, Basis::Rule(0));
        assert_eq!(d(550, "5.7.26 server busy").basis, Basis::Rule(1));
        // An explicit class applies to permanent replies only.
        assert_eq!(
            d(550, "5.7.26 server busy").classification.class,
            BounceClass::Hard
        );
        assert_eq!(
            d(450, "4.7.26 policy").classification.class,
            BounceClass::Soft
        );
        assert_eq!(d(550, "5.7.260 busy").basis, Basis::Rule(1));
        assert_eq!(d(550, "5.1.1 server busy").basis, Basis::Rule(2));
        assert_eq!(d(550, "server busy").basis, Basis::Rule(2));
        assert!(matches!(d(551, "server busy").basis, Basis::Code(551)));
        assert_eq!(d(550, "other\r\n  thing").basis, Basis::Rule(2));
        assert_eq!(d(550, "CaseSensitive").basis, Basis::Rule(3));
        assert!(matches!(d(550, "casesensitive").basis, Basis::Code(_)));
    }

    #[test]
    fn include_defaults_appends_the_shipped_rules() {
        let rules = Rules::from_toml(
            r#"
            include_defaults = true
            [[rule]]
            contains = "user unknown"
            reason = "filtered"
            "#,
        )
        .unwrap();
        assert_eq!(rules.len(), Rules::defaults().len() + 1);
        let r = reply(550, "5.1.1 user unknown");
        assert_eq!(rules.classify(&r).reason, Reason::Filtered);
        let r = reply(550, "5.7.1 blocked using zen.spamhaus.org");
        assert_eq!(rules.classify(&r).reason, Reason::Blocked);
        assert_eq!(Rules::from_toml("").unwrap().len(), 0);
    }

    #[test]
    fn errors_name_the_rule_and_the_problem() {
        let err = |toml: &str| Rules::from_toml(toml).unwrap_err();
        let e = err(r#"
            [[rule]]
            contains = "ok"
            reason = "blocked"
            [[rule]]
            name = "broken"
            regex = "unclosed("
            reason = "blocked"
        "#);
        assert!(matches!(
            &e,
            RulesError::Rule { index: 1, number: 2, name: Some(n), problem: RuleProblem::BadRegex { pattern, .. } }
                if n == "broken" && pattern == "unclosed("
        ));
        let text = e.to_string();
        assert!(
            text.starts_with("bounce rule 2 (broken): regex \"unclosed(\" does not compile"),
            "{text}"
        );
        let problem = |toml: &str| match err(toml) {
            RulesError::Rule {
                index: 0, problem, ..
            } => problem,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(
            problem("[[rule]]\ncontains = 'x'\nreason = 'nope'"),
            RuleProblem::UnknownReason("nope".into())
        );
        assert_eq!(
            problem("[[rule]]\nreason = 'blocked'"),
            RuleProblem::NoPattern
        );
        assert_eq!(
            problem("[[rule]]\ncontains = ''\nreason = 'blocked'"),
            RuleProblem::EmptyPattern
        );
        assert_eq!(
            problem("[[rule]]\nregex = 'a*'\nreason = 'blocked'"),
            RuleProblem::EmptyPattern
        );
        assert_eq!(
            problem("[[rule]]\ncontains = 'x'\nreason = 'blocked'\nclass = 'firm'"),
            RuleProblem::BadClass("firm".into())
        );
        assert_eq!(
            problem("[[rule]]\ncontains = 'x'\nreason = 'blocked'\ncode = ' 6xx'"),
            RuleProblem::BadCode(" 6xx".into())
        );
        assert_eq!(
            problem("[[rule]]\ncontains = 'x'\nreason = 'blocked'\ncode = 1234"),
            RuleProblem::BadCode("1234".into())
        );
        assert_eq!(
            problem("[[rule]]\ncontains = 'x'\nreason = 'blocked'\nstatus = '5.a'"),
            RuleProblem::BadStatus("5.a".into())
        );
        assert!(matches!(
            problem("[[rule]]\ncontains = 'x'\nreasn = 'blocked'"),
            RuleProblem::Shape(m) if m.contains("reasn")
        ));
        assert!(matches!(err("[[rule]\n"), RulesError::Toml(_)));
        assert!(matches!(err("rules = []"), RulesError::Toml(m) if m.contains("rules")));
    }

    #[test]
    fn code_and_status_matchers() {
        let c = CodeMatch::parse("55x").unwrap();
        assert!(c.matches(552) && !c.matches(542) && !c.matches(1552));
        assert_eq!(c.to_string(), "55x");
        assert!(CodeMatch::parse("5xx").unwrap().matches(599));
        assert!(CodeMatch::parse("55").is_none() && CodeMatch::parse("a50").is_none());
        let s = StatusMatch::parse("x.1.1").unwrap();
        assert!(s.matches(EnhancedStatus::parse("4.1.1").unwrap()));
        assert!(!s.matches(EnhancedStatus::parse("4.1.10").unwrap()));
        assert_eq!(s.to_string(), "x.1.1");
        assert!(
            StatusMatch::parse("5")
                .unwrap()
                .matches(EnhancedStatus::parse("5.9.9").unwrap())
        );
        for bad in ["", "3.1", "5.1.1.1", "5..1", "5.1234"] {
            assert!(StatusMatch::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn shipped_rules_know_common_replies() {
        let cases: &[(u16, &str, Reason, BounceClass, Category)] = &[
            (
                550,
                "5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser",
                Reason::UserUnknown,
                BounceClass::Hard,
                Category::BadMailbox,
            ),
            (
                452,
                "4.2.2 The email account that you tried to reach is over quota. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaTemp",
                Reason::MailboxFull,
                BounceClass::Soft,
                Category::Quota,
            ),
            (
                552,
                "5.2.2 <ann@example.com>: user is over quota",
                Reason::MailboxFull,
                BounceClass::Soft,
                Category::Quota,
            ),
            (
                550,
                "Mailbox full",
                Reason::MailboxFull,
                BounceClass::Soft,
                Category::Quota,
            ),
            (
                554,
                "5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.1",
                Reason::Blocked,
                BounceClass::Soft,
                Category::SpamBlock,
            ),
            (
                530,
                "5.7.0 Must issue a STARTTLS command first.",
                Reason::FailedStartTls,
                BounceClass::Soft,
                Category::Tls,
            ),
            (
                550,
                "5.7.1 TLS required for this domain",
                Reason::FailedStartTls,
                BounceClass::Soft,
                Category::Tls,
            ),
            (
                450,
                "4.1.2 <ann@nowhere.example>: Recipient address rejected: Domain not found",
                Reason::HostUnknown,
                BounceClass::Soft,
                Category::Dns,
            ),
            (
                550,
                "Host or domain name not found. Name service error for name=nowhere.example type=MX: Host not found",
                Reason::HostUnknown,
                BounceClass::Hard,
                Category::Dns,
            ),
            (
                450,
                "4.1.8 <news@shop.example>: Sender address rejected: Domain not found",
                Reason::Rejected,
                BounceClass::Soft,
                Category::Policy,
            ),
            (
                550,
                "5.7.511 Access denied, banned sender[192.0.2.1]. To request removal from this list please forward this message to delist@messaging.microsoft.com.",
                Reason::Blocked,
                BounceClass::Soft,
                Category::SpamBlock,
            ),
            (
                550,
                "5.4.1 Recipient address rejected: Access denied. AS(201806281) [x.prod.outlook.com]",
                Reason::UserUnknown,
                BounceClass::Hard,
                Category::BadMailbox,
            ),
            (
                421,
                "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
                Reason::BadReputation,
                BounceClass::Soft,
                Category::SpamBlock,
            ),
            (
                553,
                "5.7.1 [TS03] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed.",
                Reason::Blocked,
                BounceClass::Soft,
                Category::SpamBlock,
            ),
            (
                554,
                "delivery error: dd This user doesn't have a yahoo.com account (ann@yahoo.com) [0] - mta1.mail.example",
                Reason::UserUnknown,
                BounceClass::Hard,
                Category::BadMailbox,
            ),
            (
                550,
                "5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM.",
                Reason::AuthFailure,
                BounceClass::Soft,
                Category::Policy,
            ),
            (
                550,
                "5.7.1 Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked.",
                Reason::SpamDetected,
                BounceClass::Soft,
                Category::SpamBlock,
            ),
            (
                556,
                "5.1.10 Recipient address has null MX",
                Reason::NotAccept,
                BounceClass::Hard,
                Category::Dns,
            ),
            (
                550,
                "5.1.1 <ann@example.com>: Recipient address rejected: User unknown in virtual mailbox table",
                Reason::UserUnknown,
                BounceClass::Hard,
                Category::BadMailbox,
            ),
            (
                550,
                "5.5.0 Requested action not taken: mailbox unavailable",
                Reason::UserUnknown,
                BounceClass::Hard,
                Category::BadMailbox,
            ),
            (
                450,
                "4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered.",
                Reason::Speeding,
                BounceClass::Soft,
                Category::Policy,
            ),
            (
                454,
                "4.7.1 <ann@elsewhere.example>: Relay access denied",
                Reason::NoRelaying,
                BounceClass::Soft,
                Category::Policy,
            ),
            (
                550,
                "5.1.1 <ann@icloud.com>: inactive email address",
                Reason::Suspend,
                BounceClass::Soft,
                Category::BadMailbox,
            ),
        ];
        for &(code, text, reason, class, category) in cases {
            let r = SmtpReply::parse_lines(&[format!("{code} {text}")]).unwrap();
            let c = classify_reply(&r);
            assert_eq!(
                (c.reason, c.class, c.category()),
                (reason, class, category),
                "{code} {text}"
            );
        }
    }

    #[test]
    fn wrapped_multiline_replies_match() {
        let r = SmtpReply::parse_lines(&[
            "550-5.1.1 The email account that you tried to reach does",
            "550-5.1.1 not exist. Please try double-checking the recipient's",
            "550 5.1.1 email address.",
        ])
        .unwrap();
        let d = Rules::defaults().decide(&r);
        let Basis::Rule(i) = d.basis else {
            panic!("no rule matched: {d:?}")
        };
        assert_eq!(
            Rules::defaults().rules()[i].name.as_deref(),
            Some("gmail-no-such-account")
        );
    }
}

#[cfg(test)]
mod hostile_input {
    use super::*;

    #[test]
    fn non_ascii_and_huge_replies_classify_like_their_ascii_wording() {
        let rules = Rules::defaults();
        let plain = SmtpReply::new(
            550,
            "5.1.1 The email account that you tried to reach does not exist",
        );
        let noisy = SmtpReply::new(
            550,
            format!(
                "5.1.1 Ünïcödé — The email account that you tried to reach does not exist {}",
                "é".repeat(40_000)
            ),
        );
        assert_eq!(rules.classify(&noisy), rules.classify(&plain));
    }
}

#[cfg(test)]
mod classify_tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn any_reply_classifies_without_panicking(
            code in 200u16..600,
            lines in proptest::collection::vec("\\PC{0,60}", 1..4),
        ) {
            let wire: Vec<String> = lines
                .iter()
                .enumerate()
                .map(|(i, l)| format!("{code}{}{l}", if i + 1 == lines.len() { ' ' } else { '-' }))
                .collect();
            let reply = SmtpReply::parse_lines(&wire).unwrap();
            let _ = classify_reply(&reply);
        }
    }

    #[test]
    fn classifies_common_replies() {
        let c = |code, text: &str| classify_reply(&SmtpReply::new(code, text));
        assert_eq!(
            c(550, "5.1.1 user unknown"),
            Classification {
                reason: Reason::UserUnknown,
                class: BounceClass::Hard
            }
        );
        assert_eq!(c(552, "5.2.2 mailbox full").reason, Reason::MailboxFull);
        assert_eq!(c(552, "5.2.2 mailbox full").class, BounceClass::Soft);
        assert_eq!(
            c(554, "5.7.1 message looks like spam").reason,
            Reason::SpamDetected
        );
        assert_eq!(c(550, "5.1.2 bad destination").reason, Reason::HostUnknown);
        assert_eq!(
            c(550, "5.1.2 domain does not exist").reason,
            Reason::HostUnknown
        );
        assert_eq!(c(451, "4.7.1 try again later").class, BounceClass::Soft);
    }
}
