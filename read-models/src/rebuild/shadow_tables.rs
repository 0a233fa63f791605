//! The shadow tables a rebuild fills: their schema, copies of the live tables' shape
//! (columns, constraints, triggers, storage), their indexes built concurrently, and the
//! checks that the swap will not undo a migration.

use super::*;

impl Rebuild {
    pub(super) fn shadow_schema(&self) -> String {
        format!("till_rebuild_{}", self.projection.name())
    }

    pub(super) fn retired_schema(&self) -> String {
        format!("till_retired_{}", self.projection.name())
    }

    /// Where each of the projection's tables lives now (resolved with the connection's
    /// own search path, as the projector's connections resolve them).
    pub(super) async fn tables(&mut self) -> Result<Vec<Table>, ReadError> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = Nullable<Text>)]
            schema: Option<String>,
            #[diesel(sql_type = Text)]
            live: String,
            #[diesel(sql_type = Text)]
            shadow: String,
        }
        let mut out = Vec::new();
        for name in self.projection.tables() {
            let row = diesel::sql_query(
                "SELECT n.nspname AS schema, \
                   format('%I.%I', n.nspname, $1) AS live, \
                   format('%I.%I', $2, $1) AS shadow \
                 FROM (SELECT 1) AS one \
                 LEFT JOIN pg_class c ON c.oid = to_regclass(quote_ident($1)) \
                 LEFT JOIN pg_namespace n ON n.oid = c.relnamespace",
            )
            .bind::<Text, _>(*name)
            .bind::<Text, _>(self.shadow_schema())
            .get_result::<Row>(&mut self.conn)
            .await?;
            let Some(schema) = row.schema else {
                return Err(ReadError::Internal(format!(
                    "table {name} not found (are the migrations applied?)"
                )));
            };
            if schema == self.shadow_schema() {
                return Err(ReadError::Internal(format!(
                    "table {name} resolves to the rebuild's own schema"
                )));
            }
            out.push(Table {
                name,
                live: row.live,
                live_schema: schema,
                shadow: row.shadow,
            });
        }
        Ok(out)
    }

    pub(super) async fn drop_schemas(&mut self) -> Result<(), ReadError> {
        for schema in [self.shadow_schema(), self.retired_schema()] {
            diesel::sql_query(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&mut self.conn)
                .await?;
        }
        Ok(())
    }

    /// Creates the shadow tables: the live tables' columns, defaults, checks, keys,
    /// storage options and triggers; the secondary indexes come after the copy.
    pub(super) async fn prepare_shadow(&mut self, tables: &[Table]) -> Result<(), ReadError> {
        for schema in [self.shadow_schema(), self.retired_schema()] {
            diesel::sql_query(format!("CREATE SCHEMA {schema}"))
                .execute(&mut self.conn)
                .await?;
        }
        let mut statements = Vec::new();
        for t in tables {
            statements.push(format!(
                "CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES)",
                t.shadow, t.live
            ));
            statements.extend(
                definitions(
                    &mut self.conn,
                    "SELECT format('ALTER TABLE %s ADD CONSTRAINT %I %s', $2, conname, \
                       pg_get_constraintdef(oid)) AS ddl \
                     FROM pg_constraint WHERE conrelid = $1::regclass \
                       AND contype IN ('p', 'u', 'x') ORDER BY conname",
                    t,
                )
                .await?,
            );
            statements.extend(
                definitions(
                    &mut self.conn,
                    "SELECT format('ALTER TABLE %s SET (%s)', $2, \
                       array_to_string(reloptions, ', ')) AS ddl \
                     FROM pg_class WHERE oid = $1::regclass AND reloptions IS NOT NULL",
                    t,
                )
                .await?,
            );
            statements.extend(
                definitions(
                    &mut self.conn,
                    "SELECT replace(pg_get_triggerdef(oid), ' ON ' || $1 || ' ', \
                       ' ON ' || $2 || ' ') AS ddl \
                     FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal \
                     ORDER BY tgname",
                    t,
                )
                .await?
                .into_iter()
                .map(|ddl| checked(ddl, t))
                .collect::<Result<Vec<_>, _>>()?,
            );
        }
        for ddl in statements {
            diesel::sql_query(ddl).execute(&mut self.conn).await?;
        }
        Ok(())
    }

    /// The live tables' secondary indexes (those not behind a constraint), for the
    /// shadow tables, under the same names, built `CONCURRENTLY` (so the build holds
    /// no transaction id, see [`concurrently`]).
    pub(super) async fn index_statements(
        &mut self,
        tables: &[Table],
    ) -> Result<Vec<String>, ReadError> {
        let mut out = Vec::new();
        for t in tables {
            for ddl in definitions(
                &mut self.conn,
                "SELECT replace(pg_get_indexdef(i.indexrelid), ' ON ' || $1 || ' ', \
                   ' ON ' || $2 || ' ') AS ddl \
                 FROM pg_index i WHERE i.indrelid = $1::regclass AND NOT EXISTS \
                   (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) \
                 ORDER BY i.indexrelid",
                t,
            )
            .await?
            {
                out.push(concurrently(&checked(ddl, t)?)?);
            }
        }
        Ok(out)
    }
}

#[derive(QueryableByName)]
pub(super) struct Text1 {
    #[diesel(sql_type = Text)]
    pub(super) t: String,
}

/// What a table looks like, minus its name and schema: columns with their types, then
/// indexes, constraints and triggers with their definitions, then storage options.
/// The swap compares the live tables with the rebuilt ones: a migration that changed the
/// live table during the rebuild must not be undone by the swap.
pub(super) async fn shape(conn: &mut AsyncPgConnection, table: &str) -> Result<String, ReadError> {
    #[derive(QueryableByName)]
    struct Shape {
        #[diesel(sql_type = Nullable<Text>)]
        shape: Option<String>,
    }
    Ok(diesel::sql_query(
        "SELECT concat_ws(E'\\n', \
           (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) \
              || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END \
              || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), ''), ', ' \
              ORDER BY a.attnum) \
            FROM pg_attribute a \
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
            WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped), \
           (SELECT string_agg(def, E'\\n' ORDER BY def) FROM ( \
              SELECT regexp_replace(pg_get_indexdef(indexrelid), ' ON \\S+ ', ' ON _ ') AS def \
              FROM pg_index WHERE indrelid = $1::regclass \
              UNION ALL SELECT conname || ' ' || pg_get_constraintdef(oid) \
              FROM pg_constraint WHERE conrelid = $1::regclass \
              UNION ALL SELECT regexp_replace(pg_get_triggerdef(oid), ' ON \\S+ ', ' ON _ ') \
              FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal) AS defs), \
           (SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = $1::regclass) \
         ) AS shape",
    )
    .bind::<Text, _>(table)
    .get_result::<Shape>(conn)
    .await?
    .shape
    .unwrap_or_default())
}

/// Runs a catalog query over one table (`$1` the live table, `$2` its shadow) that
/// returns DDL, with an empty search path so every name in the definitions comes out
/// schema-qualified (and the text replacements below are exact).
pub(super) async fn definitions(
    conn: &mut AsyncPgConnection,
    query: &str,
    table: &Table,
) -> Result<Vec<String>, ReadError> {
    #[derive(QueryableByName)]
    struct Ddl {
        #[diesel(sql_type = Text)]
        ddl: String,
    }
    let rows: Vec<Ddl> = transactions::transaction(conn, async |conn| {
        diesel::sql_query("SET LOCAL search_path = ''")
            .execute(&mut *conn)
            .await?;
        diesel::sql_query(query)
            .bind::<Text, _>(&table.live)
            .bind::<Text, _>(&table.shadow)
            .load::<Ddl>(conn)
            .await
    })
    .await?;
    Ok(rows.into_iter().map(|r| r.ddl).collect())
}

/// A definition copied from the live table must now name the shadow table.
pub(super) fn checked(ddl: String, table: &Table) -> Result<String, ReadError> {
    if ddl.contains(&format!(" ON {} ", table.shadow)) {
        Ok(ddl)
    } else {
        Err(ReadError::Internal(format!(
            "cannot copy a definition of {} to the shadow table: {ddl}",
            table.live
        )))
    }
}

/// `CREATE [UNIQUE] INDEX ...` as `CREATE [UNIQUE] INDEX CONCURRENTLY ...`.
///
/// A plain `CREATE INDEX` is one transaction that takes its id at the start (it writes
/// the catalog) and keeps it until the build ends; projectors read only below the oldest
/// id in flight, so the whole build held every projection back, for seconds on a large
/// table. A concurrent build writes the catalog in short transactions of its own and
/// builds without an id. It waits for transactions older than its snapshots (short ones
/// here: nobody else writes the shadow table) and cannot run inside a transaction block,
/// which the rebuild's connection is not in between batches.
pub(super) fn concurrently(ddl: &str) -> Result<String, ReadError> {
    for prefix in ["CREATE INDEX ", "CREATE UNIQUE INDEX "] {
        if let Some(rest) = ddl.strip_prefix(prefix) {
            return Ok(format!("{prefix}CONCURRENTLY {rest}"));
        }
    }
    Err(ReadError::Internal(format!(
        "cannot build this index concurrently: {ddl}"
    )))
}

pub(super) fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::concurrently;

    #[test]
    pub(super) fn index_builds_are_made_concurrent() {
        let built = |ddl: &str| concurrently(ddl).unwrap();
        assert_eq!(
            built("CREATE INDEX a_idx ON s.t USING btree (x)"),
            "CREATE INDEX CONCURRENTLY a_idx ON s.t USING btree (x)"
        );
        assert_eq!(
            built("CREATE UNIQUE INDEX a_key ON s.t USING btree (x)"),
            "CREATE UNIQUE INDEX CONCURRENTLY a_key ON s.t USING btree (x)"
        );
        assert!(concurrently("ALTER TABLE s.t ADD x int").is_err());
    }

    /// A rebuild writes its copies because the projections name their tables without a
    /// schema (the rebuild's search path puts the copies first): a qualified name would
    /// write the live table while it is being rebuilt.
    #[test]
    pub(super) fn projections_name_their_tables_without_a_schema() {
        let sources = [
            ("mod.rs", include_str!("../projections/mod.rs")),
            (
                "product_view.rs",
                include_str!("../projections/product_view.rs"),
            ),
            (
                "order_view.rs",
                include_str!("../projections/order_view.rs"),
            ),
            (
                "customer_summary.rs",
                include_str!("../projections/customer_summary.rs"),
            ),
            ("sales.rs", include_str!("../projections/sales.rs")),
        ];
        for (file, text) in sources {
            for (n, line) in text.lines().enumerate() {
                let qualified = line.match_indices(".rm_").any(|(i, _)| {
                    line[..i]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '"')
                });
                assert!(
                    !qualified,
                    "projections/{file}:{}: a schema-qualified read-model table",
                    n + 1
                );
            }
        }
    }
}
