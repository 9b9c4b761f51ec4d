//! Running external commands, printing each one before it runs.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};

use anyhow::{Context, Result, bail};

/// An external command that is printed before it runs.
#[derive(Debug)]
pub struct Cmd {
    inner: Command,
    shown: String,
    quiet: bool,
}

impl Cmd {
    pub fn new(program: &str) -> Self {
        Self {
            inner: Command::new(program),
            shown: program.to_owned(),
            quiet: false,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        let arg = arg.as_ref();
        let _ = write!(self.shown, " {}", quote(arg));
        self.inner.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.shown = format!("{key}={value} {}", self.shown);
        self.inner.env(key, value);
        self
    }

    /// Does not pass `key` on from this process's environment.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.shown = format!("env -u {key} {}", self.shown);
        self.inner.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.inner.current_dir(dir);
        self
    }

    /// Does not print the command: for probes repeated while waiting.
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    fn announce(&self) {
        if self.quiet {
            return;
        }
        match self.inner.get_current_dir() {
            Some(dir) => println!("$ (cd {}) {}", dir.display(), self.shown),
            None => println!("$ {}", self.shown),
        }
    }

    /// The command to spawn as the caller needs (its stdio piped), announced now.
    pub fn into_command(self) -> Command {
        self.announce();
        self.inner
    }

    /// Runs with inherited stdio; returns the exit status.
    pub fn status(mut self) -> Result<ExitStatus> {
        self.announce();
        self.inner
            .status()
            .with_context(|| format!("could not start `{}`", self.shown))
    }

    /// Runs with inherited stdio; fails unless it exits successfully.
    pub fn run(self) -> Result<()> {
        let shown = self.shown.clone();
        let status = self.status()?;
        if !status.success() {
            bail!("`{shown}` failed ({status})");
        }
        Ok(())
    }

    /// Runs quietly (a probe) and returns the captured output; `None` if it could not start.
    pub fn probe(mut self) -> Option<Output> {
        self.announce();
        self.inner
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .ok()
    }

    /// Runs with stdout shown line by line as it comes and also captured (stderr inherited);
    /// fails unless it exits successfully. For long runs whose output is also read.
    pub fn tee(mut self) -> Result<String> {
        use std::io::{BufRead as _, BufReader};
        self.announce();
        let mut child = self
            .inner
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("could not start `{}`", self.shown))?;
        let mut captured = String::new();
        if let Some(stdout) = child.stdout.take() {
            for line in BufReader::new(stdout).lines() {
                let line = line.with_context(|| format!("reading `{}`", self.shown))?;
                println!("{line}");
                captured.push_str(&line);
                captured.push('\n');
            }
        }
        let status = child
            .wait()
            .with_context(|| format!("waiting for `{}`", self.shown))?;
        if !status.success() {
            bail!("`{}` failed ({status})", self.shown);
        }
        Ok(captured)
    }

    /// Runs with stdout captured (stderr inherited); fails unless it exits successfully.
    pub fn stdout(mut self) -> Result<Vec<u8>> {
        self.announce();
        let out = self
            .inner
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("could not start `{}`", self.shown))?;
        if !out.status.success() {
            bail!("`{}` failed ({})", self.shown, out.status);
        }
        Ok(out.stdout)
    }
}

/// A `std::process::Command` as a shell line, quoted as `Cmd` shows its commands.
pub fn shown(cmd: &Command) -> String {
    let mut s = quote(cmd.get_program());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote(a));
    }
    s
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=+./:,@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
