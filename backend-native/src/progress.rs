//! Progress bars on stderr (indicatif), one style for every command:
//! `⠁ ACTION [=====>    ] POS/LEN ITEMS (RATE, ETA T)`.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` items.
pub fn bar(len: u64, action: &str, items: &str) -> ProgressBar {
    styled(len, action, items, "")
}

/// A bar over `n` items, hidden when there are `hide_up_to` or fewer (too quick to watch).
pub fn bar_over(n: usize, hide_up_to: usize, action: &str, items: &str) -> ProgressBar {
    if n <= hide_up_to {
        return ProgressBar::hidden();
    }
    bar(n as u64, action, items)
}

/// A bar over `len` items with a message after the count (set with `set_message`), starting at
/// `done`.
pub fn bar_with_message(len: u64, done: u64, action: &str, items: &str) -> ProgressBar {
    let bar = styled(len, action, items, " {msg}");
    bar.set_position(done);
    bar
}

fn styled(len: u64, action: &str, items: &str, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {action} [{{bar:30}}] {{pos}}/{{len}} {items}{message} ({{per_sec}}, ETA {{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// A bar over `len` bytes (hidden when there are none).
pub fn bytes_bar(len: u64, action: &str) -> ProgressBar {
    if len == 0 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {action} [{{bar:30}}] {{bytes}}/{{total_bytes}} ({{bytes_per_sec}}, ETA {{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}
