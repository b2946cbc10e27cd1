//! Child processes for benchmarks: a real broker and the null broker, each
//! on a free port, killed when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct ChildBroker {
    child: Child,
    pub addr: String,
    /// The schema registry's URL, when it runs.
    pub registry_url: Option<String>,
}

pub(super) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `runnel serve` (through `program`) with its data in `data_dir`, Kafka
/// on `addr`, and the registry and connect worker as given.
fn serve_command(
    program: Command,
    data_dir: &Path,
    addr: &str,
    registry: &str,
    connect: &str,
) -> Command {
    let mut cmd = program;
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--kafka-addr")
        .arg(addr)
        .args(["--registry-addr", registry, "--connect-addr", connect])
        // The admin listener on a port of its own (an environment variable,
        // so an older build under RUNNEL_BENCH_BROKER still starts).
        .env("RUNNEL_ADMIN_ADDR", "127.0.0.1:0");
    cmd
}

/// The `runnel` binary that serves as the benchmarked broker: this one, or
/// `RUNNEL_BENCH_BROKER` (another build, to compare two versions of the
/// broker under the same client).
pub(super) fn broker_exe() -> Result<std::path::PathBuf> {
    match std::env::var_os("RUNNEL_BENCH_BROKER") {
        Some(path) => Ok(path.into()),
        None => Ok(std::env::current_exe()?),
    }
}

impl ChildBroker {
    /// `runnel serve` on a free port with its data in `data_dir`.
    pub fn runnel(data_dir: &Path) -> Result<ChildBroker> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let exe = Command::new(broker_exe()?);
        let cmd = serve_command(exe, data_dir, &addr, "off", "off");
        Self::spawn(cmd, addr, None)
    }

    /// `runnel serve` with its schema registry, both on free ports; with
    /// `cpu`, pinned to that CPU (through `taskset`).
    pub fn runnel_with_registry(data_dir: &Path, cpu: Option<usize>) -> Result<ChildBroker> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let registry = format!("127.0.0.1:{}", free_port()?);
        let cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c")
                    .arg(cpu.to_string())
                    .arg(std::env::current_exe()?);
                c
            }
            None => Command::new(std::env::current_exe()?),
        };
        let cmd = serve_command(cmd, data_dir, &addr, &registry, "off");
        let broker = Self::spawn(cmd, addr, Some(registry.clone()))?;
        wait_listening(&registry, "the schema registry")?;
        Ok(broker)
    }

    /// `runnel serve` with its connect worker; and the worker's REST URL.
    pub fn runnel_with_connect(data_dir: &Path) -> Result<(ChildBroker, String)> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let connect = format!("127.0.0.1:{}", free_port()?);
        let exe = Command::new(std::env::current_exe()?);
        let cmd = serve_command(exe, data_dir, &addr, "off", &connect);
        let broker = Self::spawn(cmd, addr, None)?;
        wait_listening(&connect, "the connect worker")?;
        Ok((broker, format!("http://{connect}")))
    }

    /// `runnel serve` with a YAML config file written next to `data_dir`.
    pub fn runnel_with_config(data_dir: &Path, yaml: &str) -> Result<ChildBroker> {
        let config = data_dir.with_extension("yaml");
        std::fs::write(&config, yaml)?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let exe = Command::new(std::env::current_exe()?);
        let mut cmd = serve_command(exe, data_dir, &addr, "off", "off");
        cmd.arg("--config").arg(&config);
        Self::spawn(cmd, addr, None)
    }

    /// The no-storage ceiling endpoint.
    pub fn null(partitions: i32) -> Result<ChildBroker> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args([
            "bench",
            "null-broker",
            "--addr",
            &addr,
            "--partitions",
            &partitions.to_string(),
        ]);
        Self::spawn(cmd, addr, None)
    }

    fn spawn(mut cmd: Command, addr: String, registry: Option<String>) -> Result<ChildBroker> {
        let child = cmd
            .env("RUNNEL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a broker process")?;
        let mut broker = ChildBroker {
            child,
            addr,
            registry_url: registry.map(|r| format!("http://{r}")),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&broker.addr).is_err() {
            if let Some(status) = broker.child.try_wait()? {
                bail!("broker process exited with {status}");
            }
            if Instant::now() > deadline {
                bail!("broker did not listen on {} within 30 s", broker.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(broker)
    }
}

impl ChildBroker {
    /// User-mode CPU time the broker process has used so far, from /proc
    /// (USER_HZ ticks, 100 per second on Linux). Kernel time is left out:
    /// it is mostly the page cache copy, whose cost swings with the VM's
    /// memory state.
    pub fn user_cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the parenthesised command name; utime is the 14th
        // field of the line.
        let rest = stat.rsplit_once(')')?.1;
        let ticks = rest.split_whitespace().nth(11)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }
}

/// Pins this process (every thread, and the threads it starts later) to
/// one CPU, through `taskset`.
pub fn pin_self(cpu: usize) -> Result<()> {
    let status = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .context("running taskset (util-linux) to pin the benchmark")?;
    anyhow::ensure!(
        status.success(),
        "taskset could not pin the benchmark to CPU {cpu}"
    );
    Ok(())
}

fn wait_listening(addr: &str, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not listen on {addr} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
