"""The DuckDB warehouse IO manager shared by every domain."""

from collections.abc import Sequence

import pandas as pd
from dagster import EnvVar, OutputContext
from dagster._core.definitions.metadata import TableMetadataSet
from dagster._core.storage.db_io_manager import DbTypeHandler, TableSlice
from dagster_duckdb_pandas import DuckDBPandasIOManager, DuckDBPandasTypeHandler

from recsys_assets.config.variables import SecretRef


class PandasTableHandler(DuckDBPandasTypeHandler):
    """Like the stock pandas handler, but an empty frame still creates its (empty) table.

    The stock handler skips empty frames entirely, so a table whose first partitions are empty
    (a clean source has no quarantined rows) would not exist and every reader of it would fail.
    The partition's old rows are deleted before this is called either way.
    """

    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection
    ):
        if not obj.empty:
            return super().handle_output(context, table_slice, obj, connection)
        # DuckDB reads the local frame named `obj` by replacement scan, columns and types only.
        connection.execute(
            f"create table if not exists {table_slice.schema}.{table_slice.table} "
            "as select * from obj"
        )
        rows = TableMetadataSet(partition_row_count=0, storage_kind="duckdb")
        if not context.has_partition_key:
            rows = TableMetadataSet(row_count=0, storage_kind="duckdb")
        context.add_output_metadata(dict(rows))


class WarehouseIOManager(DuckDBPandasIOManager):
    """Stores pandas frames as DuckDB tables; partitions replace their own rows only."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [PandasTableHandler()]


def warehouse_io_manager(database: str | SecretRef, schema: str = "events") -> WarehouseIOManager:
    """The warehouse of a settings' ``warehouse``: a local DuckDB file as it is; a secret as
    ``dg.EnvVar``, which Dagster reads only when a run needs it (a run without the variable
    fails with Dagster's message naming it)."""
    if isinstance(database, SecretRef):
        return WarehouseIOManager(database=EnvVar(database.env_var_name), schema=schema)
    return WarehouseIOManager(database=database, schema=schema)
