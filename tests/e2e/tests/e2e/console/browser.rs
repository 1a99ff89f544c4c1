//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`), with the
//! checks every console page gets: axe-core finds no serious or critical violation, the page
//! does not scroll sideways at 1280 and 390 px, and a screenshot of each width.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The widths every page is checked and photographed at: a laptop and a phone.
pub const WIDTHS: [(u32, u32, &str); 2] = [(1280, 900, "1280"), (390, 844, "390")];

const AXE: &str = include_str!("vendor/axe.min.js");

/// A chromedriver process on a free local port.
pub struct Driver {
    pub url: String,
    _child: Child,
}

impl Driver {
    pub async fn start() -> anyhow::Result<Driver> {
        let port = waybill_e2e::stack::free_port()?.port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver (scripts/test.sh installs chromium-driver)")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("chromedriver did not listen on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Driver {
            url: format!("http://127.0.0.1:{port}"),
            _child: child,
        })
    }
}

/// One browser (its own profile directory, so its own cookies) on the console.
pub struct Browser {
    pub client: Client,
    base: String,
    _profile: TempDir,
}

impl Browser {
    pub async fn open(driver: &Driver, base: &str) -> anyhow::Result<Browser> {
        let profile = TempDir::new("chromium")?;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1280,900",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.0.display())])
        .collect::<Vec<_>>();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "args": args, "binary": chromium_binary() }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .context("opening a Chromium session")?;
        Ok(Browser {
            client,
            base: base.to_owned(),
            _profile: profile,
        })
    }

    /// Opens a console path (`/console/...`).
    pub async fn visit(&self, path: &str) -> anyhow::Result<()> {
        self.client.goto(&format!("{}{path}", self.base)).await?;
        Ok(())
    }

    pub async fn path(&self) -> anyhow::Result<String> {
        Ok(self.client.current_url().await?.path().to_owned())
    }

    /// The visible text of the page.
    pub async fn text(&self) -> anyhow::Result<String> {
        let value = self
            .client
            .execute("return document.body.innerText", vec![])
            .await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    pub async fn eval(&self, script: &str) -> anyhow::Result<Value> {
        Ok(self.client.execute(script, vec![]).await?)
    }

    /// Runs `script` with a `done` callback (its last argument) and returns what it passed.
    pub async fn eval_async(&self, script: &str) -> anyhow::Result<Value> {
        Ok(self.client.execute_async(script, vec![]).await?)
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.client.find(Locator::Css(css)).await?.click().await?;
        Ok(())
    }

    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let field = self.client.find(Locator::Css(css)).await?;
        field.clear().await?;
        field.send_keys(text).await?;
        Ok(())
    }

    /// Signs in with `key` through the form, as a person would.
    pub async fn sign_in(&self, key: &str) -> anyhow::Result<()> {
        self.visit("/console/login").await?;
        self.type_into("#key", key).await?;
        self.click("form button[type=submit]").await?;
        self.wait_text("Overview").await?;
        let path = self.path().await?;
        anyhow::ensure!(path == "/console/overview", "signed in to {path}");
        Ok(())
    }

    /// Clicks `css` and waits for the page that answers to show `needle`.
    pub async fn click_then(&self, css: &str, needle: &str) -> anyhow::Result<String> {
        self.click(css).await?;
        self.wait_text(needle).await
    }

    /// Waits (at most 15 s) until the current page's text contains `needle`: a click that
    /// submits a form returns before the answer has loaded.
    pub async fn wait_text(&self, needle: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.text().await.unwrap_or_default();
            if text.contains(needle) {
                return Ok(text);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the page never showed {needle:?}: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A POST from the page with `fetch` (the session cookie goes along): its status.
    pub async fn post_status(&self, path: &str, with_csrf: bool) -> anyhow::Result<u64> {
        let script = format!(
            "const done = arguments[arguments.length - 1];
             const token = document.querySelector('input[name=csrf]');
             const body = {with_csrf} && token ? 'csrf=' + encodeURIComponent(token.value) : '';
             fetch({path:?}, {{method: 'POST', body, headers: {{'content-type': 'application/x-www-form-urlencoded'}}, redirect: 'manual'}})
               .then(r => done(r.status)).catch(e => done(-1));"
        );
        let status = self.eval_async(&script).await?;
        status.as_u64().context("no status")
    }

    /// The page's checks at both widths: axe-core (no serious or critical violation), no
    /// sideways scrolling, and a screenshot `<name>-<width>.png` in `shots`.
    pub async fn check_page(&self, name: &str, shots: &Path) -> anyhow::Result<()> {
        for (width, height, label) in WIDTHS {
            self.client.set_window_size(width, height).await?;
            let overflow = self
                .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
                .await?;
            anyhow::ensure!(
                overflow.as_i64() == Some(0),
                "{name} scrolls sideways by {overflow} px at {width} px"
            );
            let violations = self.axe().await?;
            anyhow::ensure!(
                violations.is_empty(),
                "{name} at {width} px has serious accessibility violations: {violations:#?}"
            );
            // The whole page, up to a bound, rather than the first screenful.
            // The window is taller than the page's viewport by the browser's own frame.
            let full = self
                .eval("return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight")
                .await?;
            let full = full
                .as_u64()
                .map_or(height, |h| h as u32)
                .clamp(height, 3 * height);
            self.client.set_window_size(width, full).await?;
            let png = self.client.screenshot().await?;
            std::fs::write(shots.join(format!("{name}-{label}.png")), png)?;
        }
        self.client.set_window_size(1280, 900).await?;
        Ok(())
    }

    /// axe-core's serious and critical violations on the current page.
    async fn axe(&self) -> anyhow::Result<Vec<Value>> {
        let loaded = self.eval("return typeof axe !== 'undefined'").await?;
        if loaded != Value::Bool(true) {
            self.client.execute(AXE, vec![]).await?;
        }
        let result = self
            .eval_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {resultTypes: ['violations']})
                   .then(r => done(r.violations
                     .filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => ({id: v.id, impact: v.impact, help: v.help,
                                 targets: v.nodes.map(n => n.target.join(' '))}))))
                   .catch(e => done([{id: 'axe-error', help: String(e)}]));",
            )
            .await?;
        Ok(result.as_array().cloned().unwrap_or_default())
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

fn chromium_binary() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .unwrap_or("chromium")
}

/// Where screenshots go: `WAYBILL_CONSOLE_SCREENSHOTS` (e.g. `docs/console` to refresh the
/// committed ones), else `target/console-screenshots`.
pub fn screenshots_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("WAYBILL_CONSOLE_SCREENSHOTS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots"),
    };
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> anyhow::Result<TempDir> {
        let dir =
            std::env::temp_dir().join(format!("waybill-{label}-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
