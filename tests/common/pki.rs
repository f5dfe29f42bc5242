//! Test certificates made with the openssl CLI: a CA, a server certificate
//! it signs (for `upstream.test` and 127.0.0.1), a client certificate it
//! signs (CN `gateway`), and a second, unrelated CA. Files live in a temp
//! dir kept as long as the [`Pki`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::require;

pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki { dir };
        pki.ca("ca");
        pki.ca("other-ca");
        pki.leaf(
            "server",
            "ca",
            "upstream.test",
            "subjectAltName=DNS:upstream.test,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        pki.leaf("client", "ca", "gateway", "extendedKeyUsage=clientAuth\n");
        // Servers that drop privileges (mosquitto runs as its own user when
        // started as root) must read them: test keys, readable by all.
        use std::os::unix::fs::PermissionsExt;
        let readable = |p: &Path, mode| fs::set_permissions(p, fs::Permissions::from_mode(mode));
        readable(pki.dir.path(), 0o755).expect("chmod the PKI folder");
        for entry in fs::read_dir(pki.dir.path()).expect("list the PKI folder") {
            let path = entry.expect("PKI file").path();
            readable(&path, 0o644).expect("chmod a PKI file");
        }
        pki
    }

    /// `NAME.pem` / `NAME.key` in the PKI's folder.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// The path as a string, for configs.
    pub fn file(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new(require("openssl"))
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=Switchyard test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    /// Issue `NAME.pem` and `NAME.key` (a fresh key), signed by `ca`, for
    /// server `cn` with these DNS names, valid for `days` (each issue gets
    /// its own serial).
    pub fn issue(&self, name: &str, cn: &str, dns: &[&str], days: u32) {
        let names: Vec<String> = dns.iter().map(|d| format!("DNS:{d}")).collect();
        let ext = format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth\n",
            names.join(",")
        );
        self.leaf_for(name, "ca", cn, &ext, days);
    }

    fn leaf(&self, name: &str, ca: &str, cn: &str, ext: &str) {
        self.leaf_for(name, ca, cn, ext, 2);
    }

    fn leaf_for(&self, name: &str, ca: &str, cn: &str, ext: &str, days: u32) {
        let ext_file = format!("{name}.ext");
        fs::write(
            self.dir.path().join(&ext_file),
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}"),
        )
        .expect("write the extensions file");
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            &days.to_string(),
            "-extfile",
            &ext_file,
        ]);
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
