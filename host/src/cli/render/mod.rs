//! Report renderers: RFC 4180 CSV, a self-contained HTML page with inline
//! SVG charts, and compact terminal bar charts, plus the usage and audit
//! reports built from them.
//!
//! The building blocks ([`csv`], [`html`], [`svg`], [`terminal`]) know
//! nothing about the host; the report builders in [`usage_report`] and
//! [`audit_report`] take plain input types so the caller only maps its data
//! onto them.

pub mod audit_report;
pub mod csv;
pub mod html;
pub mod svg;
pub mod terminal;
pub mod usage_report;

pub use audit_report::{AuditRow, ChainView, audit_csv, audit_html};
pub use usage_report::{usage_csv, usage_html};
