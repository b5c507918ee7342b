//! Names of PostgreSQL's built-in types by OID, for log lines and heal events
//! (`column "total" changed type: integer → bigint` rather than `23 → 20`). The SQL names
//! `format_type()` prints; OIDs of other types (user-defined, extensions) show as `oid NNN`.
//! The OIDs of built-in types are fixed by PostgreSQL (`pg_type.dat`).

/// `format_type()`'s name of a built-in type, or `None`.
pub fn builtin(oid: u32) -> Option<&'static str> {
    Some(match oid {
        16 => "boolean",
        17 => "bytea",
        18 => "\"char\"",
        19 => "name",
        20 => "bigint",
        21 => "smallint",
        23 => "integer",
        24 => "regproc",
        25 => "text",
        26 => "oid",
        114 => "json",
        142 => "xml",
        650 => "cidr",
        700 => "real",
        701 => "double precision",
        790 => "money",
        829 => "macaddr",
        869 => "inet",
        1000 => "boolean[]",
        1001 => "bytea[]",
        1005 => "smallint[]",
        1007 => "integer[]",
        1009 => "text[]",
        1014 => "character[]",
        1015 => "character varying[]",
        1016 => "bigint[]",
        1021 => "real[]",
        1022 => "double precision[]",
        1042 => "character",
        1043 => "character varying",
        1082 => "date",
        1083 => "time without time zone",
        1114 => "timestamp without time zone",
        1115 => "timestamp without time zone[]",
        1182 => "date[]",
        1184 => "timestamp with time zone",
        1185 => "timestamp with time zone[]",
        1186 => "interval",
        1231 => "numeric[]",
        1266 => "time with time zone",
        1560 => "bit",
        1562 => "bit varying",
        1700 => "numeric",
        2205 => "regclass",
        2249 => "record",
        2950 => "uuid",
        2951 => "uuid[]",
        3802 => "jsonb",
        3807 => "jsonb[]",
        3614 => "tsvector",
        3615 => "tsquery",
        3904 => "int4range",
        3926 => "int8range",
        3906 => "numrange",
        3908 => "tsrange",
        3910 => "tstzrange",
        3912 => "daterange",
        _ => return None,
    })
}

/// A type for a log line: its name, or `oid NNN`.
pub fn display(oid: u32) -> String {
    builtin(oid).map_or_else(|| format!("oid {oid}"), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_types_have_their_sql_names() {
        assert_eq!(display(23), "integer");
        assert_eq!(display(20), "bigint");
        assert_eq!(display(1700), "numeric");
        assert_eq!(display(1043), "character varying");
        assert_eq!(display(1184), "timestamp with time zone");
        assert_eq!(display(16385), "oid 16385");
    }
}
