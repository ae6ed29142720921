"""The test servers the integration tests rely on start and answer."""

from __future__ import annotations


def test_azurite_serves_blob_storage(azurite):
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container("support-check")
    container.upload_blob("x", b"hello")
    assert container.download_blob("x").readall() == b"hello"
    container.delete_container()


def test_postgres_over_odbc_runs_merge(postgres_odbc):
    import pyodbc

    with pyodbc.connect(postgres_odbc, autocommit=True) as connection:
        connection.execute("CREATE TABLE t (k int primary key, v int)")
        merge = (
            "MERGE INTO t USING (SELECT ?::int AS k, ?::int AS v) s ON t.k = s.k "
            "WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT (k, v) VALUES (s.k, s.v)"
        )
        connection.execute(merge, 1, 10)
        connection.execute(merge, 1, 11)
        assert [tuple(row) for row in connection.execute("SELECT k, v FROM t")] == [(1, 11)]
