//! `cardform init`: a new project that validates and plans on the embedded
//! sandbox at once: a commented manifest, placeholder images to replace,
//! the manifest's JSON Schema for editors, and a `.gitignore` that keeps
//! the state and the sandbox's data out of version control.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// What `init` wrote.
pub struct Initialised {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

const MANIFEST: &str = r#"# yaml-language-server: $schema=cardform.schema.json
#
# A card program: one merchant, one template with two level tiers, an
# activation form and a card-claim URL. `cardform plan` shows what `apply`
# would create; it runs on the embedded sandbox until `gateway.endpoint`
# names Alipay's gateway (and the keys below are set).

project: {project}

gateway:
  endpoint: sandbox
  # For Alipay's gateway (`cardform keys generate --out keys` makes the app key):
  # endpoint: https://openapi.alipay.com/gateway.do
  # app_id: "2021..."
  # private_key: { file: keys/app_private_key.pem }
  # alipay_public_key: { file: keys/alipay_public_key.pem }

merchants:
  shop:
    display_name: My Shop
    # app_auth_token: { env: SHOP_APP_AUTH_TOKEN }   # an ISV acting for the merchant
    images:
      logo: { file: images/logo.png, role: logo }             # 500 x 500
      background: { file: images/background.png, role: background }  # 1020 x 643
    templates:
      members:
        card_number: { prefix: SHOP, suffix_length: 12 }
        write_off: qrcode
        style:
          name: My Shop Members
          logo: logo
          background: background
        form: { required: [mobile], optional: [name, birthday] }
        tiers:
          - { level: silver, level_name: Silver }
          - { level: gold, level_name: Gold }
"#;

const GITIGNORE: &str = "# cardform: the state and the embedded sandbox's data stay out of git\nstate/\n.cardform/\nkeys/\n*.plan\n";

/// Make a project in `dir` (created if missing; files already there are
/// never overwritten).
pub fn init(dir: &Path) -> Result<Initialised> {
    std::fs::create_dir_all(dir.join("images"))
        .with_context(|| format!("cannot create `{}`", dir.display()))?;
    let manifest = dir.join("cardform.yaml");
    if manifest.exists() {
        bail!(
            "`{}` exists already: init writes a new project only\nhint: run `cardform init NEW_DIR`",
            manifest.display()
        );
    }
    let project = std::fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .map(|n| {
            n.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c.to_ascii_lowercase()
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
        })
        .filter(|n| !n.trim_matches('-').is_empty())
        .unwrap_or_else(|| "my-program".into());
    // Dark placeholders with a light grid: the default white text reads on them.
    let stripes = |x: u32, y: u32| !x.is_multiple_of(64) && !y.is_multiple_of(64);
    let files: Vec<(PathBuf, Vec<u8>)> = vec![
        (
            manifest,
            MANIFEST.replace("{project}", &project).into_bytes(),
        ),
        (
            dir.join("cardform.schema.json"),
            crate::manifest::schema_text().into_bytes(),
        ),
        (
            dir.join("images/logo.png"),
            crate::util::qr::png(500, 500, |x, y| (x / 50 + y / 50) % 2 == 0),
        ),
        (
            dir.join("images/background.png"),
            crate::util::qr::png(1020, 643, stripes),
        ),
        (dir.join(".gitignore"), GITIGNORE.as_bytes().to_vec()),
    ];
    let mut written = Vec::new();
    for (path, bytes) in files {
        if path.exists() {
            continue;
        }
        std::fs::write(&path, bytes)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        written.push(path);
    }
    Ok(Initialised {
        dir: dir.to_path_buf(),
        files: written,
    })
}
