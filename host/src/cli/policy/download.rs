//! The bar a bundle download draws on stderr: bytes so far, of the total
//! when the server says it. Drawn only on a terminal and never with
//! `--json`, so scripts and logs see none of it.

use std::io::{self, IsTerminal};

use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::Output;
use crate::ops::bundle_fetch::Download;

pub struct DownloadBar {
    shown: bool,
    /// The bar and the source it is for.
    bar: Option<(ProgressBar, String)>,
}

impl DownloadBar {
    pub fn new(out: &Output) -> DownloadBar {
        DownloadBar {
            shown: !out.json() && io::stderr().is_terminal(),
            bar: None,
        }
    }

    /// Redraws for `d`; a new source (`policy update` fetches several)
    /// gets a bar of its own.
    pub fn update(&mut self, d: Download<'_>) {
        if !self.shown {
            return;
        }
        if self
            .bar
            .as_ref()
            .is_none_or(|(_, source)| source != d.source)
        {
            self.clear();
            // The source goes last as `wide_msg`, cut to the terminal's
            // width: a long reference must not wrap the bar onto two lines.
            let template = if d.total.is_some() {
                "[{bar:20}] {bytes}/{total_bytes} {wide_msg}"
            } else {
                "{bytes} {wide_msg}"
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            let bar = ProgressBar::new(d.total.unwrap_or(0))
                .with_style(style)
                .with_message(d.source.to_string());
            self.bar = Some((bar, d.source.to_string()));
        }
        if let Some((bar, _)) = &self.bar {
            bar.set_position(d.done);
        }
    }

    fn clear(&mut self) {
        if let Some((bar, _)) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for DownloadBar {
    /// The bar goes away before the result is printed, or the error.
    fn drop(&mut self) {
        self.clear();
    }
}
