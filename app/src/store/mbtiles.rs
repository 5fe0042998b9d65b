//! Raster MBTiles files: the SQL of reading one tile and the metadata, and of writing a file.
//!
//! An MBTiles file is an SQLite database with a `tiles` table (rows counted from the south,
//! TMS order: [`tms_row`]) and an optional `metadata` table. It is not the cache; it lives here
//! because only `store/` speaks SQL. The console's tile workers (`gui/tiles.rs`) call
//! [`MbTiles::tile_bytes`] and decode the bytes themselves; each worker opens its own reader.
//!
//! Deliberately not here: vector tiles (`pbf`), decoding, and anything of the map.

use anyhow::{Context as _, Result, bail};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};

/// The row of tile (zoom, y) in an MBTiles file, which counts rows from the south (TMS).
pub fn tms_row(zoom: u8, y: u32) -> u32 {
    let rows = 1u64 << zoom.min(31);
    (rows - 1).saturating_sub(u64::from(y)) as u32
}

/// A raster MBTiles file, opened read-only.
#[derive(Debug)]
pub struct MbTiles {
    conn: Connection,
    path: PathBuf,
}

impl MbTiles {
    /// Opens `path` and checks that it is a raster MBTiles file.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_file() {
            bail!("no MBTiles file at {}", path.display());
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening the MBTiles file {}", path.display()))?;
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'tiles'",
                [],
                |r| r.get(0),
            )
            .with_context(|| format!("{} is not an SQLite file", path.display()))?;
        if tables == 0 {
            bail!(
                "{} has no `tiles` table: not an MBTiles file",
                path.display()
            );
        }
        let this = Self {
            conn,
            path: path.to_owned(),
        };
        if let Some(format) = this.metadata("format")?
            && !matches!(format.as_str(), "png" | "jpg" | "jpeg")
        {
            bail!(
                "{} holds {format} tiles; only raster tiles (png, jpg) are supported",
                path.display()
            );
        }
        Ok(this)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A `metadata` value, if the file has that row (or no metadata table at all).
    pub fn metadata(&self, name: &str) -> Result<Option<String>> {
        let has_table: i64 = self.conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'metadata'",
            [],
            |r| r.get(0),
        )?;
        if has_table == 0 {
            return Ok(None);
        }
        self.conn
            .query_row("SELECT value FROM metadata WHERE name = ?1", [name], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .with_context(|| format!("reading metadata {name} of {}", self.path.display()))
    }

    /// The stored bytes of tile (zoom, x, y) in XYZ numbering, `None` if the file has no such
    /// tile.
    pub fn tile_bytes(&self, zoom: u8, x: u32, y: u32) -> Result<Option<Vec<u8>>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT tile_data FROM tiles WHERE zoom_level = ?1 AND tile_column = ?2 AND tile_row = ?3",
        )?;
        stmt.query_row(rusqlite::params![zoom, x, tms_row(zoom, y)], |r| {
            r.get::<_, Vec<u8>>(0)
        })
        .optional()
        .with_context(|| format!("reading tile {zoom}/{x}/{y} from {}", self.path.display()))
    }
}

/// One tile to write: (zoom, x, y) in XYZ numbering and its bytes.
pub type TileBlob = (u8, u32, u32, Vec<u8>);

/// Writes a raster MBTiles file at `path` (which must not exist) with `metadata` rows and
/// `tiles`, stored by TMS row as the format asks; for tests, demos and tools that make tile
/// files.
pub fn write(
    path: &Path,
    metadata: &[(&str, &str)],
    tiles: impl IntoIterator<Item = TileBlob>,
) -> Result<()> {
    if path.exists() {
        bail!("{} exists: not overwriting it", path.display());
    }
    let mut conn = Connection::open(path)
        .with_context(|| format!("creating the MBTiles file {}", path.display()))?;
    let tx = conn.transaction()?;
    tx.execute_batch(
        "CREATE TABLE metadata (name TEXT, value TEXT);
         CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB);
         CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row);",
    )?;
    for (name, value) in metadata {
        tx.execute("INSERT INTO metadata VALUES (?1, ?2)", [name, value])?;
    }
    {
        let mut insert = tx.prepare("INSERT INTO tiles VALUES (?1, ?2, ?3, ?4)")?;
        for (zoom, x, y, blob) in tiles {
            insert.execute(rusqlite::params![zoom, x, tms_row(zoom, y), blob])?;
        }
    }
    tx.commit()
        .with_context(|| format!("writing the MBTiles file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tms_rows_count_from_the_south() {
        assert_eq!(tms_row(0, 0), 0);
        assert_eq!(tms_row(1, 0), 1);
        assert_eq!(tms_row(1, 1), 0);
        assert_eq!(tms_row(3, 2), 5);
        assert_eq!(tms_row(20, 0), (1 << 20) - 1);
    }

    #[test]
    fn a_written_file_reads_back_by_xyz_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.mbtiles");
        write(
            &path,
            &[("format", "png"), ("attribution", "A")],
            [(1, 0, 0, b"north".to_vec()), (1, 0, 1, b"south".to_vec())],
        )
        .expect("write");
        let m = MbTiles::open(&path).expect("open");
        assert_eq!(
            m.tile_bytes(1, 0, 0).expect("read"),
            Some(b"north".to_vec())
        );
        assert_eq!(
            m.tile_bytes(1, 0, 1).expect("read"),
            Some(b"south".to_vec())
        );
        assert_eq!(m.tile_bytes(1, 1, 1).expect("read"), None);
        assert_eq!(
            m.metadata("attribution").expect("read").as_deref(),
            Some("A")
        );
        assert!(
            write(&path, &[], []).is_err(),
            "an existing file is not overwritten"
        );
    }

    #[test]
    fn files_that_are_not_raster_mbtiles_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.mbtiles");
        let err = MbTiles::open(&missing).expect_err("no file");
        assert!(format!("{err:#}").contains("no MBTiles file at"), "{err:#}");
        let text = dir.path().join("text.mbtiles");
        std::fs::write(&text, "just text, no database").expect("write");
        assert!(MbTiles::open(&text).is_err());
        let empty = dir.path().join("empty.mbtiles");
        Connection::open(&empty)
            .expect("create")
            .execute_batch("CREATE TABLE other (a);")
            .expect("schema");
        let err = MbTiles::open(&empty).expect_err("no tiles table");
        assert!(format!("{err:#}").contains("no `tiles` table"), "{err:#}");
        let vector = dir.path().join("vector.mbtiles");
        write(&vector, &[("format", "pbf")], []).expect("write");
        let err = MbTiles::open(&vector).expect_err("vector tiles");
        assert!(format!("{err:#}").contains("pbf"), "{err:#}");
    }
}
