//! Progress bars for a person at a terminal: rates as `1.59 M/s`, `812 k/s` or `3.2 MB/s`
//! and the time left as `42s` or `3m05s`, instead of indicatif's `1,589,530.6285/s`.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// Whether progress bars may be drawn: only for a person watching a terminal.
pub fn interactive() -> bool {
    std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// A progress bar of `len` steps, hidden when stdout or stderr is not a terminal. With `bytes`
/// the steps are bytes and the rate is in B/s (decimal units); otherwise they are counted
/// things (entries, operations) and the rate is per second.
pub fn progress_bar(len: u64, what: &str, bytes: bool) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(style(bytes));
    pb.set_message(what.to_string());
    pb
}

/// A bar counting things; `{rate}` and `{left}` are this module's keys, not indicatif's.
const COUNT_TEMPLATE: &str = "{msg:>24} [{bar:30}] {human_pos}/{human_len} ({rate}, {left} left)";
/// A bar counting bytes, in decimal units like its rate.
const BYTES_TEMPLATE: &str =
    "{msg:>24} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} ({rate}, {left} left)";

/// The bar's style, with this module's `{rate}` and `{left}`.
fn style(bytes: bool) -> ProgressStyle {
    let template = if bytes {
        BYTES_TEMPLATE
    } else {
        COUNT_TEMPLATE
    };
    // The templates are constants, checked by a test; a bar is never worth failing for.
    let style =
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    style
        .progress_chars("=> ")
        .with_key(
            "rate",
            move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let unit = if bytes { "B" } else { "" };
                // Nothing done yet: no rate ("-") rather than "0.00/s".
                let rate = if s.pos() == 0 { f64::NAN } else { s.per_sec() };
                let _ = w.write_str(&human_rate(rate, unit));
            },
        )
        .with_key("left", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let left = s.len().map(|len| len.saturating_sub(s.pos()));
            let _ = w.write_str(&time_left(left, s.per_sec()));
        })
}

/// A rate per second with a decimal prefix, as a person reads it: `1.59 M/s`, `812 k/s`,
/// `15.9 k/s`, `950/s` for counts (`unit` empty); `3.2 MB/s`, `45.1 MB/s`, `812 MB/s` for
/// bytes (`unit` "B": one decimal below 100, none above). Not a number (no progress yet, or
/// a broken clock) reads `-`.
pub fn human_rate(per_sec: f64, unit: &str) -> String {
    if !per_sec.is_finite() || per_sec < 0.0 {
        return "-".into();
    }
    const PREFIXES: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    // The prefix is chosen after rounding, so 999,960/s reads `1.00 M/s`, not `1000 k/s`.
    let (value, prefix) = PREFIXES
        .iter()
        .find(|(scale, _)| per_sec >= *scale * 0.9995)
        .map_or((per_sec, ""), |&(scale, p)| (per_sec / scale, p));
    let mut s = if unit.is_empty() {
        // Three significant digits, but whole numbers of things from 10 to 999 per second.
        if value >= 99.95 || (prefix.is_empty() && value >= 9.995) {
            format!("{value:.0}")
        } else if value >= 9.995 {
            format!("{value:.1}")
        } else {
            format!("{value:.2}")
        }
    } else if value >= 99.95 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    };
    if !prefix.is_empty() || !unit.is_empty() {
        s.push(' ');
    }
    let _ = write!(s, "{prefix}{unit}/s");
    s
}

/// The time left to do `left` more steps at `per_sec`: `0s` when done, `?` while there is no
/// rate yet or without a length, `42s`, `3m05s`, `2h07m`, and `>99h` beyond that.
pub fn time_left(left: Option<u64>, per_sec: f64) -> String {
    let Some(left) = left else {
        return "?".into();
    };
    if left == 0 {
        return "0s".into();
    }
    if !per_sec.is_finite() || per_sec <= 0.0 {
        return "?".into();
    }
    let secs = (left as f64 / per_sec).ceil();
    if secs >= 100.0 * 3600.0 {
        return ">99h".into();
    }
    human_duration(Duration::from_secs(secs as u64))
}

/// `42s`, `3m05s`, `2h07m`.
fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_second() {
        assert_eq!(human_rate(1_589_530.628_5, ""), "1.59 M/s");
        assert_eq!(human_rate(15_895_306.0, ""), "15.9 M/s");
        assert_eq!(human_rate(158_953_060.0, ""), "159 M/s");
        assert_eq!(human_rate(812_345.0, ""), "812 k/s");
        assert_eq!(human_rate(81_234.5, ""), "81.2 k/s");
        assert_eq!(human_rate(8_123.45, ""), "8.12 k/s");
        assert_eq!(human_rate(950.4, ""), "950/s");
        assert_eq!(human_rate(12.6, ""), "13/s");
        assert_eq!(human_rate(3.456, ""), "3.46/s");
        assert_eq!(human_rate(0.0, ""), "0.00/s");
        assert_eq!(human_rate(2.5e9, ""), "2.50 G/s");
    }

    #[test]
    fn bytes_per_second() {
        assert_eq!(human_rate(3_210_000.0, "B"), "3.2 MB/s");
        assert_eq!(human_rate(45_100_000.0, "B"), "45.1 MB/s");
        assert_eq!(human_rate(812_400_000.0, "B"), "812 MB/s");
        assert_eq!(human_rate(1.26e9, "B"), "1.3 GB/s");
        assert_eq!(human_rate(512.0, "B"), "512 B/s");
        assert_eq!(human_rate(7.0, "B"), "7.0 B/s");
    }

    #[test]
    fn prefix_is_chosen_after_rounding() {
        assert_eq!(human_rate(999_960.0, ""), "1.00 M/s");
        assert_eq!(human_rate(999_400.0, ""), "999 k/s");
        assert_eq!(human_rate(999.7, ""), "1.00 k/s");
        assert_eq!(human_rate(999_960.0, "B"), "1.0 MB/s");
    }

    #[test]
    fn no_rate_reads_as_a_dash() {
        assert_eq!(human_rate(f64::NAN, ""), "-");
        assert_eq!(human_rate(f64::INFINITY, "B"), "-");
        assert_eq!(human_rate(-1.0, ""), "-");
    }

    #[test]
    fn time_left_reads_as_a_person_says_it() {
        assert_eq!(time_left(Some(0), 0.0), "0s");
        assert_eq!(time_left(Some(10), 0.0), "?");
        assert_eq!(time_left(None, 100.0), "?");
        assert_eq!(time_left(Some(10), f64::NAN), "?");
        assert_eq!(time_left(Some(1), 1e6), "1s");
        assert_eq!(time_left(Some(4_200), 100.0), "42s");
        assert_eq!(time_left(Some(185), 1.0), "3m05s");
        assert_eq!(time_left(Some(7_620), 1.0), "2h07m");
        assert_eq!(time_left(Some(u64::MAX), 1.0), ">99h");
    }

    #[test]
    fn the_templates_parse() {
        // `with_template` failing would silently fall back to the default bar.
        for template in [COUNT_TEMPLATE, BYTES_TEMPLATE] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }
}
