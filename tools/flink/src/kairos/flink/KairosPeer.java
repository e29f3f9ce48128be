package kairos.flink;

import java.io.BufferedWriter;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.cep.CEP;
import org.apache.flink.cep.functions.PatternProcessFunction;
import org.apache.flink.cep.nfa.aftermatch.AfterMatchSkipStrategy;
import org.apache.flink.cep.pattern.Pattern;
import org.apache.flink.cep.pattern.conditions.IterativeCondition;
import org.apache.flink.cep.pattern.conditions.SimpleCondition;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.DataStreamUtils;
import org.apache.flink.streaming.api.datastream.KeyedStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.source.legacy.SourceFunction;
import org.apache.flink.util.Collector;

/**
 * The Apache Flink CEP side of the Kairos throughput comparison.
 *
 * <p>Reads the JSON-lines betting stream of {@code kairos-gen}, runs the 3-step relaxed pattern
 * of {@code tools/flink/pattern.cep} (a deposit, a bet, a withdrawal of at least half the
 * deposit, per customer, within a window) with Flink's CEP library on a local
 * {@code StreamExecutionEnvironment} in event time, and writes every match as one JSON line.
 *
 * <pre>
 *   java -cp ... kairos.flink.KairosPeer --input bets.jsonl --within-ms 3600000
 *       [--parallelism 1] [--topology keyby|chained] [--matches out.jsonl]
 * </pre>
 *
 * <p>Prints one summary line on standard output, {@code key value} pairs:
 *
 * <ul>
 *   <li>{@code events}, {@code matches}: events read and matches written; {@code malformed}:
 *       lines skipped; {@code late}: events earlier than one before them (none in a stream of
 *       {@code kairos-gen}, whose time never goes back; Flink CEP would drop those that fall
 *       behind the watermark);
 *   <li>{@code elapsed_s}: from the moment the source opens the input file (before its first
 *       byte is read) to the moment the sink has received the end of the input, which comes
 *       after the final watermark has flushed every window and every match has been written;
 *       {@code events_per_s} is {@code events / elapsed_s};
 *   <li>{@code last_match_s}: from the same start to the last match written;
 *   <li>{@code job_s}: {@code execute()} as a whole: the local cluster's start, the job's
 *       deployment, the run and its shutdown (the JVM's own start is not included anywhere);
 *   <li>{@code cpu_s}: CPU time of the whole JVM (every thread: operators, JIT compiler, GC)
 *       between the start and the end of {@code elapsed_s}.
 * </ul>
 */
public final class KairosPeer {

    /** One input line: the fields the pattern reads, plus its line number. */
    public static class Event {
        public long ts;
        public String user;
        public String type;
        /** NaN when absent (a null in Kairos: every comparison with it is false). */
        public double amount = Double.NaN;

        public double stake = Double.NaN;
        public long line;

        public Event() {}
    }

    // The local cluster runs in this JVM, so the source and the sink report through statics.
    static final AtomicLong START_NANOS = new AtomicLong();
    static final AtomicLong START_CPU = new AtomicLong();
    static final AtomicLong EVENTS = new AtomicLong();
    static final AtomicLong MALFORMED = new AtomicLong();
    static final AtomicLong LATE = new AtomicLong();
    static final AtomicLong MATCHES = new AtomicLong();
    static final AtomicLong LAST_MATCH_NANOS = new AtomicLong();
    static final AtomicLong END_NANOS = new AtomicLong();
    static final AtomicLong END_CPU = new AtomicLong();
    static final AtomicLong SINKS_OPEN = new AtomicLong();
    static final AtomicLong WRITERS = new AtomicLong();

    static long cpuNanos() {
        return ((com.sun.management.OperatingSystemMXBean)
                        ManagementFactory.getOperatingSystemMXBean())
                .getProcessCpuTime();
    }

    // ---------------------------------------------------------------------------------------
    // Source: reads the file in 1 MiB chunks, splits lines, decodes each with Jackson's
    // streaming parser (only the fields the pattern reads; the whole line is parsed).

    static final class JsonLinesSource implements SourceFunction<Event> {
        private static final long serialVersionUID = 1L;
        private final String path;
        private volatile boolean running = true;

        JsonLinesSource(String path) {
            this.path = path;
        }

        @Override
        public void run(SourceContext<Event> ctx) throws Exception {
            JsonFactory factory = new JsonFactory();
            START_CPU.set(cpuNanos());
            START_NANOS.set(System.nanoTime());
            long lineNo = 0;
            long events = 0;
            long malformed = 0;
            long late = 0;
            long lastTs = Long.MIN_VALUE;
            try (InputStream in = new FileInputStream(path)) {
                byte[] buf = new byte[1 << 20];
                int len = 0;
                boolean eof = false;
                while (running && !(eof && len == 0)) {
                    if (!eof) {
                        if (len == buf.length) {
                            buf = java.util.Arrays.copyOf(buf, buf.length * 2);
                        }
                        int n = in.read(buf, len, buf.length - len);
                        if (n < 0) {
                            eof = true;
                        } else {
                            len += n;
                        }
                    }
                    int start = 0;
                    for (int i = 0; i < len; i++) {
                        if (buf[i] == '\n') {
                            lineNo++;
                            Event e = decode(factory, buf, start, i - start, lineNo);
                            if (e != null) {
                                events++;
                                if (e.ts < lastTs) {
                                    late++; // goes back in time: the run.sh check fails
                                }
                                lastTs = Math.max(lastTs, e.ts);
                                ctx.collect(e);
                            } else if (i > start) {
                                malformed++;
                            }
                            start = i + 1;
                        }
                    }
                    if (eof && start < len) { // a last line without a newline
                        lineNo++;
                        Event e = decode(factory, buf, start, len - start, lineNo);
                        if (e != null) {
                            events++;
                            if (e.ts < lastTs) {
                                late++;
                            }
                            ctx.collect(e);
                        } else {
                            malformed++;
                        }
                        start = len;
                    }
                    System.arraycopy(buf, start, buf, 0, len - start);
                    len -= start;
                }
            }
            EVENTS.set(events);
            MALFORMED.set(malformed);
            LATE.set(late);
        }

        @Override
        public void cancel() {
            running = false;
        }
    }

    /** Decodes one line, or returns null if it is not a JSON object with ts and user_id. */
    static Event decode(JsonFactory factory, byte[] buf, int off, int len, long lineNo) {
        Event e = new Event();
        boolean hasTs = false;
        try (JsonParser p = factory.createParser(buf, off, len)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return null;
            }
            JsonToken t;
            while ((t = p.nextToken()) == JsonToken.FIELD_NAME) {
                String name = p.currentName();
                JsonToken v = p.nextToken();
                switch (name) {
                    case "ts":
                        if (v != JsonToken.VALUE_NUMBER_INT) {
                            return null;
                        }
                        e.ts = p.getLongValue();
                        hasTs = true;
                        break;
                    case "user_id":
                        e.user = v == JsonToken.VALUE_STRING ? p.getText() : null;
                        break;
                    case "type":
                        e.type = v == JsonToken.VALUE_STRING ? p.getText() : null;
                        break;
                    case "amount":
                        e.amount = v.isNumeric() ? p.getDoubleValue() : Double.NaN;
                        break;
                    case "stake":
                        e.stake = v.isNumeric() ? p.getDoubleValue() : Double.NaN;
                        break;
                    default:
                        p.skipChildren();
                }
            }
            if (t != JsonToken.END_OBJECT || p.nextToken() != null) {
                return null;
            }
        } catch (IOException ex) {
            return null;
        }
        if (!hasTs || e.user == null) {
            return null;
        }
        e.line = lineNo;
        return e;
    }

    // ---------------------------------------------------------------------------------------
    // The pattern: d -> b -> w within W, skip past last (tools/flink/pattern.cep).

    static Pattern<Event, ?> pattern(long withinMs) {
        return Pattern.<Event>begin("d", AfterMatchSkipStrategy.skipPastLastEvent())
                .where(SimpleCondition.of(e -> "deposit".equals(e.type) && e.amount >= 20))
                .followedBy("b")
                .where(SimpleCondition.of(e -> "bet".equals(e.type) && e.stake >= 10))
                .followedBy("w")
                .where(
                        new IterativeCondition<Event>() {
                            private static final long serialVersionUID = 1L;

                            @Override
                            public boolean filter(Event e, Context<Event> ctx) throws Exception {
                                if (!"withdrawal".equals(e.type)) {
                                    return false;
                                }
                                for (Event d : ctx.getEventsForPattern("d")) {
                                    return e.amount >= d.amount * 0.5;
                                }
                                return false;
                            }
                        })
                .within(Duration.ofMillis(withinMs));
    }

    /** The record of a match, the same fields as the `emit` of tools/flink/pattern.cep. */
    static final class ToRecord extends PatternProcessFunction<Event, String> {
        private static final long serialVersionUID = 1L;

        @Override
        public void processMatch(
                Map<String, List<Event>> match, Context ctx, Collector<String> out) {
            Event d = match.get("d").get(0);
            Event b = match.get("b").get(0);
            Event w = match.get("w").get(0);
            StringBuilder s = new StringBuilder(160);
            s.append("{\"user\":\"").append(d.user)
                    .append("\",\"d_ts\":").append(d.ts)
                    .append(",\"b_ts\":").append(b.ts)
                    .append(",\"w_ts\":").append(w.ts)
                    .append(",\"d_line\":").append(d.line)
                    .append(",\"b_line\":").append(b.line)
                    .append(",\"w_line\":").append(w.line)
                    .append(",\"deposit\":").append(num(d.amount))
                    .append(",\"stake\":").append(num(b.stake))
                    .append(",\"withdrawn\":").append(num(w.amount))
                    .append('}');
            out.collect(s.toString());
        }

        private static String num(double v) {
            return v == Math.rint(v) && Math.abs(v) < 1e15
                    ? Long.toString((long) v)
                    : Double.toString(v);
        }
    }

    /** Counts the records and writes them, one JSON line each, when a path is given. */
    static final class CountingSink implements Sink<String> {
        private static final long serialVersionUID = 1L;
        private final String path;

        CountingSink(String path) {
            this.path = path;
        }

        @Override
        public SinkWriter<String> createWriter(WriterInitContext context) throws IOException {
            int index = (int) WRITERS.getAndIncrement();
            Writer out = null;
            if (path != null) {
                String p = index == 0 ? path : path + "." + index;
                out =
                        new BufferedWriter(
                                new OutputStreamWriter(
                                        new FileOutputStream(p), StandardCharsets.UTF_8),
                                1 << 16);
            }
            SINKS_OPEN.incrementAndGet();
            final Writer w = out;
            return new SinkWriter<String>() {
                long matches;
                long last;
                boolean ended;

                @Override
                public void write(String record, Context c) throws IOException {
                    if (w != null) {
                        w.write(record);
                        w.write('\n');
                    }
                    matches++;
                    last = System.nanoTime();
                }

                @Override
                public void flush(boolean endOfInput) throws IOException {
                    if (!endOfInput || ended) {
                        return;
                    }
                    ended = true;
                    if (w != null) {
                        w.flush();
                    }
                    MATCHES.addAndGet(matches);
                    LAST_MATCH_NANOS.accumulateAndGet(last, Math::max);
                    // The last parallel sink to see the end of the input closes the measure.
                    if (SINKS_OPEN.decrementAndGet() == 0) {
                        END_NANOS.set(System.nanoTime());
                        END_CPU.set(cpuNanos());
                    }
                }

                @Override
                public void close() throws IOException {
                    if (w != null) {
                        w.close();
                    }
                }
            };
        }
    }

    // ---------------------------------------------------------------------------------------

    public static void main(String[] args) throws Exception {
        String input = null;
        String matchesPath = null;
        long withinMs = 3_600_000;
        int parallelism = 1;
        String topology = "keyby";
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (i + 1 >= args.length) {
                usage("missing value for " + a);
            }
            String v = args[++i];
            switch (a) {
                case "--input":
                    input = v;
                    break;
                case "--within-ms":
                    withinMs = Long.parseLong(v);
                    break;
                case "--parallelism":
                    parallelism = Integer.parseInt(v);
                    break;
                case "--topology":
                    topology = v;
                    break;
                case "--matches":
                    matchesPath = v;
                    break;
                default:
                    usage("unknown option " + a);
            }
        }
        if (input == null) {
            usage("--input is required");
        }
        if (!topology.equals("keyby") && !topology.equals("chained")) {
            usage("--topology is keyby or chained");
        }
        if (topology.equals("chained") && parallelism != 1) {
            usage("--topology chained needs --parallelism 1");
        }

        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(parallelism);
        env.getConfig().enableObjectReuse();

        DataStream<Event> events =
                env.addSource(new JsonLinesSource(input), "json-lines")
                        .setParallelism(1)
                        .assignTimestampsAndWatermarks(
                                WatermarkStrategy.<Event>forMonotonousTimestamps()
                                        .withTimestampAssigner((e, t) -> e.ts))
                        .setParallelism(1);
        KeySelector<Event, String> byUser = e -> e.user;
        KeyedStream<Event, String> keyed =
                topology.equals("chained")
                        // One partition holds every key: the stream is already partitioned, so
                        // source, CEP and sink chain into one thread (no shuffle).
                        ? DataStreamUtils.reinterpretAsKeyedStream(events, byUser)
                        : events.keyBy(byUser);
        CEP.pattern(keyed, pattern(withinMs))
                .inEventTime()
                .process(new ToRecord())
                .name("cep")
                .sinkTo(new CountingSink(matchesPath))
                .name("sink");

        long jobStart = System.nanoTime();
        env.execute("kairos-peer");
        long jobEnd = System.nanoTime();

        long ev = EVENTS.get();
        double elapsed = (END_NANOS.get() - START_NANOS.get()) / 1e9;
        double lastMatch =
                MATCHES.get() == 0 ? 0 : (LAST_MATCH_NANOS.get() - START_NANOS.get()) / 1e9;
        double cpu = (END_CPU.get() - START_CPU.get()) / 1e9;
        System.out.printf(
                java.util.Locale.ROOT,
                "events %d matches %d malformed %d late %d elapsed_s %.3f events_per_s %.0f"
                        + " last_match_s %.3f job_s %.3f cpu_s %.3f parallelism %d topology %s"
                        + " flink %s%n",
                ev,
                MATCHES.get(),
                MALFORMED.get(),
                LATE.get(),
                elapsed,
                ev / Math.max(elapsed, 1e-9),
                lastMatch,
                (jobEnd - jobStart) / 1e9,
                cpu,
                parallelism,
                topology,
                org.apache.flink.runtime.util.EnvironmentInformation.getVersion());
    }

    private static void usage(String why) {
        System.err.println("KairosPeer: " + why);
        System.err.println(
                "usage: KairosPeer --input FILE [--within-ms MS] [--parallelism P]"
                        + " [--topology keyby|chained] [--matches FILE]");
        System.exit(2);
    }
}
