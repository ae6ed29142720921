"""T-SQL, checked as far as a machine without SQL Server can: sqlglot parses every statement.

No SQL Server runs here, so these tests are the T-SQL dialect's only check
(docs/azure-sql.md says what that leaves unverified). The statements come
from ``statements(TSQL).all()`` — the complete list the store can execute
(``test_the_store_executes_only_listed_statements`` holds it to that).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from sensorflow.store.dialects import POSTGRES, TSQL
from sensorflow.store.odbc_sql import statements
from sensorflow.store.schema import INCIDENT_CUTOFFS, TABLES

STATEMENTS = statements(TSQL).all()
COLUMNS = {c.name for t in (*TABLES, INCIDENT_CUTOFFS) for c in t.columns} | {"Code"}
TABLE_NAMES = {t.name for t in TABLES}
KNOWN_TO_SQL_SERVER_ONLY = {"SYSUTCDATETIME"}  # a T-SQL built-in sqlglot parses as an unknown function

# What each column kind must be in SQL Server (CONTRACTS: ids <= 128, DATETIME2(3), FLOAT).
EXPECTED_TYPES = {
    "id": "NVARCHAR(128)",
    "ts": "DATETIME2(3)",
    "float": "FLOAT",
    "bigint": "BIGINT",
    "int": "INT",
    "bool": "BIT",
    "text": "NVARCHAR(MAX)",
    "bytes": "VARBINARY(MAX)",
}


def _tsql_type(name: str) -> str:
    """``name`` as sqlglot writes it back (INT -> INTEGER)."""
    return exp.DataType.build(name, dialect="tsql").sql(dialect="tsql")


_BYTES = {_tsql_type(name): size for name, size in {"NVARCHAR(128)": 256, "DATETIME2(3)": 7, "BIGINT": 8, "INT": 4}.items()}


def parse(sql: str) -> exp.Expression:
    trees = sqlglot.parse(sql, read="tsql", error_level=sqlglot.ErrorLevel.RAISE)
    assert len(trees) == 1, sql
    return trees[0]


def test_there_are_statements_of_every_kind():
    kinds = {type(parse(s.sql)).__name__ for s in STATEMENTS}
    assert kinds == {"IfBlock", "Merge", "Select", "Delete"}
    assert len(STATEMENTS) == len({s.sql for s in STATEMENTS}) >= 20


@pytest.mark.parametrize("statement", STATEMENTS, ids=lambda s: s.sql[:60])
def test_every_tsql_statement_parses_into_known_parts(statement):
    tree = parse(statement.sql)
    # Nothing sqlglot had to keep as opaque text; no function it does not know but the ones listed.
    assert not list(tree.find_all(exp.Command)), statement.sql
    assert {f.name for f in tree.find_all(exp.Anonymous)} <= KNOWN_TO_SQL_SERVER_ONLY
    assert len(list(tree.find_all(exp.Placeholder))) == len(statement.params)
    tables = {t.name for t in tree.find_all(exp.Table) if not isinstance(t.this, exp.OpenJSON)}
    assert tables <= TABLE_NAMES | {"indexes", "s"}, tables
    columns = {c.name for c in tree.find_all(exp.Column) if not isinstance(c.parent, exp.CollateColumnConstraint)}
    assert columns - {"name", "object_id"} <= COLUMNS  # sys.indexes' own columns aside
    # T-SQL generated from the tree parses again, to the same text.
    generated = tree.sql(dialect="tsql")
    assert parse(generated).sql(dialect="tsql") == generated


def _created_tables() -> dict[str, exp.Create]:
    created = {}
    for statement in STATEMENTS:
        tree = parse(statement.sql)
        for create in tree.find_all(exp.Create):
            if create.kind == "TABLE":
                created[create.this.this.name] = create
    return created


def _type(column: exp.ColumnDef) -> str:
    return column.args["kind"].sql(dialect="tsql")


def test_ddl_types_respect_sql_server_limits():
    created = _created_tables()
    assert set(created) == TABLE_NAMES
    for spec in TABLES:
        columns = {c.name: c for c in created[spec.name].this.expressions if isinstance(c, exp.ColumnDef)}
        assert list(columns) == [c.name for c in spec.columns]
        for column in spec.columns:
            assert _type(columns[column.name]) == _tsql_type(EXPECTED_TYPES[column.kind]), (spec.name, column.name)
            collations = [c for c in columns[column.name].find_all(exp.CollateColumnConstraint)]
            # Ids compare bytewise: "a" and "A" are different sensors, as in SQLite and PostgreSQL.
            assert [c.this.name for c in collations] == (["Latin1_General_100_BIN2"] if column.kind == "id" else [])
        key = created[spec.name].find(exp.PrimaryKey)
        assert [c.name for c in key.expressions] == list(spec.key)
        # A clustered primary key is at most 900 bytes.
        assert sum(_BYTES[_type(columns[name])] for name in spec.key) <= 900, spec.name


def test_sensor_values_is_the_seed_table_plus_ours():
    columns = [c.name for c in _created_tables()["SensorValues"].this.expressions if isinstance(c, exp.ColumnDef)]
    assert columns[:4] == ["TS", "Device", "Tag", "Value"]  # the seed's SensorValues
    assert columns[4:] == ["Count", "Min", "Max", "WrittenAt"]


def test_merges_read_json_into_the_target_columns_types():
    merges = [parse(s.sql) for s in STATEMENTS if s.sql.startswith("MERGE")]
    assert len(merges) == 9
    created = _created_tables()
    for merge in merges:
        target = merge.this.name
        assert [h.sql() for h in merge.this.args["hints"]] == ["WITH (HOLDLOCK)"]  # atomic against concurrent inserts
        ddl = {c.name: _type(c) for c in created[target].this.expressions if isinstance(c, exp.ColumnDef)}
        source = merge.args["using"].this
        assert isinstance(source, exp.OpenJSON)
        for field in source.expressions:
            assert field.args["kind"].sql(dialect="tsql") == ddl[field.name], (target, field.name)
            assert field.args["path"].name == f"$.{field.name}"


def test_the_store_executes_only_listed_statements():
    """Every execute() in the ODBC store runs ``statement.sql`` of a Statement: no SQL text is built elsewhere."""
    source = Path(__file__).resolve().parents[2] / "sensorflow" / "store" / "odbc.py"
    calls = [
        node for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("execute", "executemany")
    ]
    assert calls
    for call in calls:
        first = call.args[0]
        assert isinstance(first, ast.Attribute) and first.attr == "sql", ast.unparse(call)
    assert not [n for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.JoinedStr) and "SELECT" in ast.unparse(n)]


def test_postgresql_statements_parse_too():
    for statement in statements(POSTGRES).all():
        tree = sqlglot.parse_one(statement.sql, read="postgres", error_level=sqlglot.ErrorLevel.RAISE)
        assert not list(tree.find_all(exp.Command)), statement.sql


def test_incident_statements_read_json_as_the_table_types_and_compare_ids_bytewise():
    sql = statements(TSQL)
    ddl = {c.name: _type(c) for c in _created_tables()["Incidents"].this.expressions if isinstance(c, exp.ColumnDef)}
    delete = parse(sql.delete_incidents_since.sql)
    assert isinstance(delete, exp.Delete) and delete.this.name == "Incidents"
    (cutoffs,) = list(delete.find_all(exp.OpenJSON))
    assert {f.name: f.args["kind"].sql(dialect="tsql") for f in cutoffs.expressions} == {
        "Device": ddl["Device"], "Tag": ddl["Tag"], "Since": ddl["End"]
    }
    assert sql.delete_incidents_since.params == ("detector", "cutoffs")
    read = parse(sql.read_incidents.sql)
    assert [o.sql(dialect="tsql") for o in read.args["order"].expressions][:2] == ["i.[Start] DESC", "i.[PeakScore] DESC"]
    for tree in (delete, read):
        collations = {c.expression.name for c in tree.find_all(exp.Collate)}
        assert collations == {"Latin1_General_100_BIN2"}
