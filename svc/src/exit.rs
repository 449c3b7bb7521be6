//! One exit-code convention for every server binary, and a fatal error
//! printed as one line.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | clean shutdown (SIGINT/SIGTERM, or asked to stop while starting) |
//! | 1 | runtime failure: the server stopped on its own after it served |
//! | 2 | bad flags or configuration (clap's own usage errors exit 2 too) |
//! | 3 | startup failure: a listener cannot be bound, the index cannot be built |
//!
//! `main` returns `svc::main_exit(result)`; the error is printed as
//! `error: cannot bind metrics address 127.0.0.1:9400: address in use`,
//! with its causes on the same line, and a backtrace only when
//! `RUST_BACKTRACE` is set.

use std::process::ExitCode;

/// A clean shutdown.
pub const EXIT_OK: u8 = 0;
/// The server failed after it had started serving.
pub const EXIT_RUNTIME: u8 = 1;
/// Bad flags or configuration.
pub const EXIT_CONFIG: u8 = 2;
/// The server could not start (bind error, unusable index, …).
pub const EXIT_STARTUP: u8 = 3;

/// Why a binary stops with a non-zero exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad flags or configuration: exit 2.
    Config(anyhow::Error),
    /// The server could not start: exit 3.
    Startup(anyhow::Error),
    /// The server failed while serving: exit 1.
    Runtime(anyhow::Error),
}

impl Failure {
    pub fn config(error: impl Into<anyhow::Error>) -> Failure {
        Failure::Config(error.into())
    }

    pub fn startup(error: impl Into<anyhow::Error>) -> Failure {
        Failure::Startup(error.into())
    }

    pub fn runtime(error: impl Into<anyhow::Error>) -> Failure {
        Failure::Runtime(error.into())
    }

    /// The process exit code of this failure.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Config(_) => EXIT_CONFIG,
            Failure::Startup(_) => EXIT_STARTUP,
            Failure::Runtime(_) => EXIT_RUNTIME,
        }
    }

    /// The error inside.
    pub fn error(&self) -> &anyhow::Error {
        match self {
            Failure::Config(error) | Failure::Startup(error) | Failure::Runtime(error) => error,
        }
    }

    /// The one line printed on stderr: `error: what: cause: cause`.
    pub fn line(&self) -> String {
        format!("error: {:#}", self.error())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error())
    }
}

/// Prints a failure as one line on stderr (plus the backtrace when
/// `RUST_BACKTRACE` is set) and turns the result into the exit code.
pub fn main_exit(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(failure) => {
            eprintln!("{}", failure.line());
            if std::env::var_os("RUST_BACKTRACE").is_some_and(|value| value != "0") {
                eprintln!("{}", failure.error().backtrace());
            }
            ExitCode::from(failure.code())
        }
    }
}

/// An I/O error's message without the `(os error N)` suffix, lowercase:
/// `address in use` rather than `Address in use (os error 98)`.
pub fn describe_io(error: &std::io::Error) -> String {
    let text = error.to_string();
    let text = match text.find(" (os error") {
        Some(end) => &text[..end],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_the_documented_codes() {
        assert_eq!(Failure::config(anyhow::anyhow!("x")).code(), 2);
        assert_eq!(Failure::startup(anyhow::anyhow!("x")).code(), 3);
        assert_eq!(Failure::runtime(anyhow::anyhow!("x")).code(), 1);
    }

    #[test]
    fn a_failure_is_one_line_with_its_causes() {
        let error = anyhow::Error::new(std::io::Error::other("inner"))
            .context("cannot bind metrics address 127.0.0.1:9400");
        let line = Failure::startup(error).line();
        assert_eq!(
            line,
            "error: cannot bind metrics address 127.0.0.1:9400: inner"
        );
        assert!(!line.contains('\n') && !line.contains("Caused by"));
    }

    #[test]
    fn io_errors_read_as_lowercase_without_the_os_code() {
        let error = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        assert_eq!(describe_io(&error), "address in use");
        let error = std::io::Error::from_raw_os_error(98);
        assert!(!describe_io(&error).contains("os error"), "{error}");
    }

    #[tokio::test]
    async fn a_taken_port_is_a_startup_failure_naming_the_address() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let failure = crate::net::bind("metrics", &addr).await.unwrap_err();
        assert_eq!(failure.code(), EXIT_STARTUP);
        let line = failure.line();
        assert!(
            line.starts_with(&format!("error: cannot bind metrics address {addr}: ")),
            "{line}"
        );
        assert!(!line.contains("os error"), "{line}");
    }
}
