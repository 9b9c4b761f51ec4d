//! The node's walls: a network namespace joined to the host by one veth pair, where every
//! cluster process, the pods and the hostNetwork relay live, and a private mount namespace in
//! which the paths Kubernetes 1.20 and containerd hard-code (/run, /var/lib/kubelet,
//! /var/lib/cni, /var/log/pods, /var/log/containers) are the cluster's own directories, and the
//! kernel tunables the kubelet insists on read as it wants them, so that it changes none of the
//! host's. Also the node's teardown: every process in that mount namespace or under the
//! cluster's cgroups, the cgroups, the namespaces, and the mount points made for it.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::cmd::Cmd;

/// Host paths bound to the cluster's directories inside its mount namespace.
const BOUND: &[&str] = &[
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/log/pods",
    "/var/log/containers",
];

/// The kubelet's kernel tunables (1.20, `setupKernelTunables`): it writes these unless they
/// already read so. They are global, not per namespace, so the node's mount namespace shows
/// the kubelet files holding these values in their place; the host's stay as they are.
const TUNABLES: &[(&str, &str)] = &[
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// The cgroup v1 controllers the kubelet's cgroupfs driver manages.
const CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "hugetlb",
    "systemd",
];

/// What the node is made of, saved as `node.json` in the cluster's directory so `down` finds
/// all of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub netns: String,
    pub host_if: String,
    pub octet: u8,
    pub holder: Option<u32>,
    /// Host directories made as mount points (they did not exist), removed by `down`.
    pub made: Vec<PathBuf>,
}

impl Node {
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.octet, 1)
    }

    pub fn node_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.octet, 2)
    }

    /// The node's cgroup root, under which the kubelet puts every pod.
    pub fn cgroup_root(&self) -> String {
        format!("/xdpturn-{}", self.name)
    }

    pub fn state_file(dir: &Path) -> PathBuf {
        dir.join("node.json")
    }

    pub fn load(dir: &Path) -> Result<Option<Self>> {
        match fs::read(Self::state_file(dir)) {
            Ok(data) => Ok(Some(serde_json::from_slice(&data).with_context(|| {
                format!("reading {}", Self::state_file(dir).display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("reading {}", Self::state_file(dir).display()))
            }
        }
    }

    fn save(&self) -> Result<()> {
        fs::write(
            Self::state_file(&self.dir),
            serde_json::to_vec_pretty(self)?,
        )
        .with_context(|| format!("writing {}", Self::state_file(&self.dir).display()))
    }

    /// Makes the namespaces, the veth pair, the mounts and the cgroup roots.
    pub fn create(name: &str, dir: &Path) -> Result<Self> {
        let octet = free_octet()?;
        let mut node = Self {
            name: name.to_owned(),
            dir: dir.to_owned(),
            netns: format!("xdpturn-k8s-{name}"),
            host_if: format!("xdpk{octet}"),
            octet,
            holder: None,
            made: Vec::new(),
        };
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        node.save()?;
        node.network()?;
        node.mounts()?;
        for controller in CONTROLLERS {
            let base = Path::new("/sys/fs/cgroup").join(controller);
            if base.is_dir() {
                let root = base.join(node.cgroup_root().trim_start_matches('/'));
                fs::create_dir_all(&root)
                    .with_context(|| format!("creating {}", root.display()))?;
            }
        }
        node.save()?;
        Ok(node)
    }

    fn network(&self) -> Result<()> {
        let ns = self.netns.as_str();
        Cmd::new("ip").args(["netns", "add", ns]).run()?;
        Cmd::new("ip")
            .args([
                "link",
                "add",
                &self.host_if,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
            ])
            .args(["netns", ns])
            .run()?;
        Cmd::new("ip")
            .args(["addr", "add", &format!("{}/24", self.host_ip()), "dev"])
            .arg(&self.host_if)
            .run()?;
        Cmd::new("ip")
            .args(["link", "set", &self.host_if, "up"])
            .run()?;
        let inside = |args: &[&str]| Cmd::new("ip").args(["-n", ns]).args(args).run();
        inside(&["link", "set", "lo", "up"])?;
        inside(&[
            "addr",
            "add",
            &format!("{}/24", self.node_ip()),
            "dev",
            "eth0",
        ])?;
        inside(&["link", "set", "eth0", "up"])?;
        inside(&[
            "route",
            "add",
            "default",
            "via",
            &self.host_ip().to_string(),
        ])
    }

    /// Starts the process that holds the node's mount namespace (inside the network
    /// namespace), then mounts the node's own paths in it.
    fn mounts(&mut self) -> Result<()> {
        let log = self.dir.join("holder.log");
        let file = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(["--", "unshare", "--mount", "--propagation", "private", "--"])
            .args(["sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .process_group(0)
            .spawn()
            .context("starting the mount namespace's holder (nsenter, unshare)")?;
        let pid = child.id();
        self.holder = Some(pid);
        self.save()?;
        let own = fs::read_link("/proc/self/ns/mnt").context("reading /proc/self/ns/mnt")?;
        let started = Instant::now();
        while fs::read_link(format!("/proc/{pid}/ns/mnt")).ok().as_ref() == Some(&own) {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("the holder (pid {pid}) has no mount namespace of its own after 10 s");
            }
            sleep(Duration::from_millis(20));
        }

        let host = self.dir.join("host");
        self.exec("mount")
            .args(["-t", "tmpfs", "-o", "mode=0755", "xdpturn-run", "/run"])
            .run()?;
        for path in BOUND {
            let source = host.join(path.trim_start_matches('/'));
            fs::create_dir_all(&source)
                .with_context(|| format!("creating {}", source.display()))?;
            let target = Path::new(path);
            if !target.exists() {
                fs::create_dir_all(target)
                    .with_context(|| format!("creating the mount point {}", target.display()))?;
                self.made.push(target.to_owned());
                self.save()?;
            }
            self.exec("mount")
                .arg("--bind")
                .arg(&source)
                .arg(target)
                .run()?;
        }
        let tunables = self.dir.join("tunables");
        for (name, value) in TUNABLES {
            let file = tunables.join(name.replace('/', "."));
            fs::create_dir_all(&tunables)
                .with_context(|| format!("creating {}", tunables.display()))?;
            fs::write(&file, format!("{value}\n"))
                .with_context(|| format!("writing {}", file.display()))?;
            self.exec("mount")
                .arg("--bind")
                .arg(&file)
                .arg(Path::new("/proc/sys").join(name))
                .run()?;
        }
        Ok(())
    }

    /// A command run inside the node: in its network and mount namespaces.
    pub fn exec(&self, program: &str) -> Cmd {
        let holder = self.holder.unwrap_or_default();
        Cmd::new("nsenter").args(["-t", &holder.to_string(), "-m", "-n", "--", program])
    }

    /// Starts `program` inside the node in its own process group, its output in
    /// `logs/<name>.log`; returns its PID. It outlives this process (`down` stops it).
    pub fn spawn(&self, name: &str, program: &Path, args: &[String]) -> Result<u32> {
        let logs = self.dir.join("logs");
        fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let log = logs.join(format!("{name}.log"));
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("cloning a log file handle")?;
        let holder = self
            .holder
            .ok_or_else(|| anyhow!("the node has no holder process"))?;
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &holder.to_string(), "-m", "-n", "--"])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        println!("$ {}   # > {}", crate::cmd::shown(&cmd), log.display());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(child.id())
    }

    /// The last `lines` lines of a component's log.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let text = fs::read_to_string(self.dir.join("logs").join(format!("{name}.log")))
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops every process of the node and removes everything [`Node::create`] made. Goes on
    /// past errors and reports the first.
    pub fn destroy(&self) -> Result<()> {
        let mut first: Option<anyhow::Error> = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                eprintln!("warning: {e:#}");
                first.get_or_insert(e);
            }
        };
        note(self.kill_all());
        note(self.remove_cgroups());
        if Path::new("/run/netns").join(&self.netns).exists() {
            note(Cmd::new("ip").args(["netns", "del", &self.netns]).run());
        }
        if Path::new("/sys/class/net").join(&self.host_if).exists() {
            note(Cmd::new("ip").args(["link", "del", &self.host_if]).run());
        }
        for dir in &self.made {
            // Only when empty: something else may have put files there since.
            if let Err(e) = fs::remove_dir(dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                note(Err(anyhow!(
                    "removing the mount point {}: {e}",
                    dir.display()
                )));
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Kills (SIGKILL) every process in the node's mount namespace or under its cgroup root,
    /// the holder last, until none is left.
    fn kill_all(&self) -> Result<()> {
        let mnt = self
            .holder
            .and_then(|pid| fs::read_link(format!("/proc/{pid}/ns/mnt")).ok());
        let own = fs::read_link("/proc/self/ns/mnt").ok();
        let mnt = mnt.filter(|m| Some(m) != own.as_ref());
        let cgroup = self.cgroup_root();
        let started = Instant::now();
        loop {
            let mut found = Vec::new();
            for entry in fs::read_dir("/proc").context("reading /proc")?.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                if pid == std::process::id() || zombie(pid) {
                    continue;
                }
                let in_ns =
                    mnt.is_some() && fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() == mnt;
                let in_cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .map(|c| {
                        c.lines()
                            .any(|l| under(l.rsplit(':').next().unwrap_or(""), &cgroup))
                    })
                    .unwrap_or(false);
                if in_ns || in_cgroup {
                    found.push(pid);
                }
            }
            if found.is_empty() {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("processes of the node survive SIGKILL for 30 s: {found:?}");
            }
            for pid in &found {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// Removes the node's cgroup trees, deepest first.
    fn remove_cgroups(&self) -> Result<()> {
        for controller in CONTROLLERS {
            let root = Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(self.cgroup_root().trim_start_matches('/'));
            if root.is_dir() {
                let mut dirs = Vec::new();
                collect_dirs(&root, &mut dirs);
                dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
                for dir in dirs {
                    fs::remove_dir(&dir)
                        .with_context(|| format!("removing the cgroup {}", dir.display()))?;
                }
            }
        }
        Ok(())
    }
}

/// Whether the cgroup path `path` is `root` or below it.
fn under(path: &str, root: &str) -> bool {
    path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}

/// The first 10.250.N.0/24 (N in 1..=254) that no host interface uses and no other test
/// cluster's veth is named for.
fn free_octet() -> Result<u8> {
    let addrs = Cmd::new("ip").args(["-4", "-o", "addr", "show"]).stdout()?;
    let addrs = String::from_utf8_lossy(&addrs);
    for octet in 1..=254u8 {
        let prefix = format!(" 10.250.{octet}.");
        if addrs.contains(&prefix)
            || Path::new("/sys/class/net")
                .join(format!("xdpk{octet}"))
                .exists()
        {
            continue;
        }
        return Ok(octet);
    }
    bail!("no free 10.250.N.0/24 for the node's link")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_match_only_at_a_boundary() {
        assert!(under("/xdpturn-a", "/xdpturn-a"));
        assert!(under("/xdpturn-a/kubepods/pod1", "/xdpturn-a"));
        assert!(!under("/xdpturn-ab/kubepods", "/xdpturn-a"));
        assert!(!under("/", "/xdpturn-a"));
    }
}
