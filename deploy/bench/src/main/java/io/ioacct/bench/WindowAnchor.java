package io.ioacct.bench;

import java.io.File;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;

/**
 * Bench anchor (h): what a JVM user writes for the bench's job with Kafka Streams.
 *
 * <p>Reads the raw topic's IoBatch2 records (schemas/io_batch2.avsc, parsed at run time;
 * Avro's single-object decoder checks the 10-byte header), reads the packed little-endian
 * columns with ByteBuffer, pre-aggregates each record per (volume, 1 s window) so the
 * repartition topic carries one partial per volume and window instead of one per event,
 * re-keys by volume, and reduces the partials in 1 s tumbling event-time windows (count,
 * bytes, latency sum/min/max; RocksDB window store) published to the output topic as JSON.
 *
 * <p>Arguments: bootstrap input output applicationId schemaPath stateDir graceMs commitMs.
 */
public final class WindowAnchor {
    private static final long NS_PER_S = 1_000_000_000L;
    private static final long NS_PER_MS = 1_000_000L;

    private WindowAnchor() {}

    /** count, bytes and latency (complete_ns - submit_ns) sum, min and max of some events. */
    public static final class Agg {
        long count;
        long bytes;
        long latencySum;
        long latencyMin = Long.MAX_VALUE;
        long latencyMax = Long.MIN_VALUE;

        void add(long nbytes, long latency) {
            count += 1;
            bytes = Math.addExact(bytes, nbytes);  // exact or an error, never a wrapped sum
            latencySum = Math.addExact(latencySum, latency);
            latencyMin = Math.min(latencyMin, latency);
            latencyMax = Math.max(latencyMax, latency);
        }

        static Agg merge(Agg a, Agg b) {
            Agg out = new Agg();
            out.count = Math.addExact(a.count, b.count);
            out.bytes = Math.addExact(a.bytes, b.bytes);
            out.latencySum = Math.addExact(a.latencySum, b.latencySum);
            out.latencyMin = Math.min(a.latencyMin, b.latencyMin);
            out.latencyMax = Math.max(a.latencyMax, b.latencyMax);
            return out;
        }

        String toJson(String volume, long startMs) {
            return "{\"volume\":\"" + volume + "\",\"start_ms\":" + startMs + ",\"count\":"
                + count + ",\"bytes\":" + bytes + ",\"latency_sum_ns\":" + latencySum
                + ",\"latency_min_ns\":" + latencyMin + ",\"latency_max_ns\":" + latencyMax + "}";
        }
    }

    /** Agg as 40 bytes: five longs. */
    static final Serde<Agg> AGG_SERDE = Serdes.serdeFrom(
        (topic, agg) -> ByteBuffer.allocate(40).putLong(agg.count).putLong(agg.bytes)
            .putLong(agg.latencySum).putLong(agg.latencyMin).putLong(agg.latencyMax).array(),
        (topic, data) -> {
            ByteBuffer buf = ByteBuffer.wrap(data);
            Agg agg = new Agg();
            agg.count = buf.getLong();
            agg.bytes = buf.getLong();
            agg.latencySum = buf.getLong();
            agg.latencyMin = buf.getLong();
            agg.latencyMax = buf.getLong();
            return agg;
        });

    /** One raw record -> one partial Agg per (volume, 1 s window), timestamped in event time. */
    static final class PreAggregate implements Processor<byte[], byte[], String, Agg> {
        private final BinaryMessageDecoder<GenericRecord> decoder;
        private ProcessorContext<String, Agg> context;
        private GenericRecord reuse;

        PreAggregate(Schema schema) {
            decoder = new BinaryMessageDecoder<>(GenericData.get(), schema);
        }

        @Override
        public void init(ProcessorContext<String, Agg> context) {
            this.context = context;
        }

        private static ByteBuffer column(GenericRecord record, String name) {
            return ((ByteBuffer) record.get(name)).slice().order(ByteOrder.LITTLE_ENDIAN);
        }

        @Override
        public void process(Record<byte[], byte[]> record) {
            try {
                reuse = decoder.decode(record.value(), reuse);
            } catch (java.io.IOException e) {
                throw new IllegalArgumentException("not an IoBatch2 record", e);
            }
            List<?> volumes = (List<?>) reuse.get("volumes");
            ByteBuffer volume = column(reuse, "volume");
            ByteBuffer nbytes = column(reuse, "bytes");
            ByteBuffer submit = column(reuse, "submit_ns");
            ByteBuffer complete = column(reuse, "complete_ns");
            int n = complete.remaining() / 8;
            Map<Long, Agg> partials = new HashMap<>();
            Map<Long, Long> lastMs = new HashMap<>();
            for (int i = 0; i < n; i++) {
                long done = complete.getLong(8 * i);
                long index = Integer.toUnsignedLong(volume.getInt(4 * i));
                long key = (index << 32) | Math.floorDiv(done, NS_PER_S);
                partials.computeIfAbsent(key, k -> new Agg())
                    .add(nbytes.getLong(8 * i), done - submit.getLong(8 * i));
                lastMs.merge(key, Math.floorDiv(done, NS_PER_MS), Math::max);
            }
            for (Map.Entry<Long, Agg> e : partials.entrySet()) {
                int index = (int) (e.getKey() >>> 32);
                String id = ((GenericRecord) volumes.get(index)).get("volume_id").toString();
                context.forward(new Record<>(id, e.getValue(), lastMs.get(e.getKey())));
            }
        }
    }

    static Topology topology(String input, String output, Schema schema, long graceMs) {
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
            .process(() -> new PreAggregate(schema))
            .groupByKey(Grouped.with("by-volume", Serdes.String(), AGG_SERDE))
            .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofSeconds(1),
                                                   Duration.ofMillis(graceMs)))
            .reduce(Agg::merge, Materialized.with(Serdes.String(), AGG_SERDE))
            .toStream()
            .map((w, agg) -> KeyValue.pair(w.key() + "@" + w.window().start(),
                                           agg.toJson(w.key(), w.window().start())))
            .to(output, Produced.with(Serdes.String(), Serdes.String()));
        return builder.build();
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 8) {
            System.err.println("usage: WindowAnchor bootstrap input output applicationId "
                               + "schemaPath stateDir graceMs commitMs");
            System.exit(2);
        }
        Schema schema = new Schema.Parser().parse(new File(args[4]));
        Properties props = new Properties();
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, args[3]);
        props.put(StreamsConfig.STATE_DIR_CONFIG, args[5]);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Long.parseLong(args[7]));
        Topology topology = topology(args[1], args[2], schema, Long.parseLong(args[6]));
        KafkaStreams streams = new KafkaStreams(topology, props);
        CountDownLatch stopped = new CountDownLatch(1);
        streams.setUncaughtExceptionHandler(e -> {
            e.printStackTrace();
            stopped.countDown();
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
                .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(5));
            stopped.countDown();
        }));
        streams.start();
        System.out.println("started " + new String(args[3].getBytes(StandardCharsets.UTF_8),
                                                   StandardCharsets.UTF_8));
        stopped.await();
        streams.close(Duration.ofSeconds(5));
        System.exit(1);
    }
}
