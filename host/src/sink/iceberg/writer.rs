//! Parquet data files: one batch split by the table's partition spec and fanned
//! out to a rolling file writer per partition, ZSTD-compressed.

use arrow_array::RecordBatch;
use iceberg::arrow::RecordBatchPartitionSplitter;
use iceberg::spec::{DataFile, DataFileFormat, TableProperties};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::IcebergContext;
use crate::sink::SinkError;

fn writer_properties() -> WriterProperties {
    WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build()
}

/// Writes batches as Parquet data files of `table`: each split by the table's
/// current partition spec and fanned out to one rolling file writer per
/// partition, so all batches of one commit share files. A file is closed once
/// it reaches `target_file_bytes` (by default the table property's default).
pub(super) async fn write_data_files(
    table: &Table,
    batches: impl IntoIterator<Item = Result<RecordBatch, SinkError>>,
    prefix: &str,
    target_file_bytes: Option<usize>,
) -> Result<Vec<DataFile>, SinkError> {
    let ident = table.identifier();
    let context = || format!("writing data files of {ident}");
    let metadata = table.metadata();
    let schema = metadata.current_schema().clone();
    let spec = metadata.default_partition_spec().clone();

    let parquet = ParquetWriterBuilder::new(writer_properties(), schema.clone());
    let rolling = RollingFileWriterBuilder::new(
        parquet,
        target_file_bytes.unwrap_or(TableProperties::PROPERTY_WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT),
        table.file_io().clone(),
        DefaultLocationGenerator::new(metadata).context(context)?,
        DefaultFileNameGenerator::new(prefix.to_string(), None, DataFileFormat::Parquet),
    );
    let builder = DataFileWriterBuilder::new(rolling);

    if spec.is_unpartitioned() {
        let mut writer = builder.build(None).await.context(context)?;
        for batch in batches {
            writer.write(batch?).await.context(context)?;
        }
        return writer.close().await.context(context);
    }

    let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(schema, spec)
        .context(context)?;
    let mut writer = FanoutWriter::new(builder);
    for batch in batches {
        for (partition, part) in splitter.split(&batch?).context(context)? {
            writer.write(partition, part).await.context(context)?;
        }
    }
    writer.close().await.context(context)
}
