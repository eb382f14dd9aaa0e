// The 500-message thread of lgrun's checkpoint/bench_test.go
// (BenchmarkMessagesThread) on LangGraph.js's own Postgres checkpointer:
// a graph whose node adds one assistant message of about 200 bytes per
// superstep until n reaches the target, checkpointed into a schema of its
// own on the local PostgreSQL; then the bytes of its tables
// (pg_total_relation_size: heap, indexes and TOAST), as BENCHMARKS.md
// reports lgrun's: measured once right after setup() (the empty schema)
// and once after the run; the difference is the bytes the thread adds.
//
//   npm ci && node bench.js [N] [postgres URL]
//
// The schema (lgbench_langgraphjs) is dropped first and left for
// inspection.
import { StateGraph, Annotation, MessagesAnnotation, START, END } from "@langchain/langgraph";
import { PostgresSaver } from "@langchain/langgraph-checkpoint-postgres";
import { AIMessage } from "@langchain/core/messages";
import pg from "pg";

const n = Number(process.argv[2] ?? 500);
const url = process.argv[3] ?? "postgres://postgres@127.0.0.1:5432/test";
const schema = "lgbench_langgraphjs";

const State = Annotation.Root({
  ...MessagesAnnotation.spec,
  n: Annotation({ reducer: (_, b) => b, default: () => 0 }),
  target: Annotation({ reducer: (_, b) => b, default: () => 100 }),
});

// lgrun's chatGraph: content "reply <n>: " + "lorem ipsum " × 16.
const talk = (s) => ({
  n: s.n + 1,
  messages: [new AIMessage({ content: `reply ${s.n}: ` + "lorem ipsum ".repeat(16) })],
});

const admin = new pg.Pool({ connectionString: url });
await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
const saver = PostgresSaver.fromConnString(url, { schema });
await saver.setup();

// The bytes of the schema's tables, by table (indexes and TOAST included).
async function sizes() {
  const { rows } = await admin.query(
    `SELECT c.relname AS table, pg_total_relation_size(c.oid) AS bytes
       FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
      WHERE s.nspname = $1 AND c.relkind = 'r' ORDER BY c.relname`, [schema]);
  return rows.map((r) => ({ table: r.table, bytes: Number(r.bytes) }));
}
const empty = await sizes();
const emptyTotal = empty.reduce((a, r) => a + r.bytes, 0);

const graph = new StateGraph(State)
  .addNode("talk", talk)
  .addEdge(START, "talk")
  .addConditionalEdges("talk", (s) => (s.n < s.target ? "talk" : END))
  .compile({ checkpointer: saver });

const config = { configurable: { thread_id: "chat" }, recursionLimit: n + 10 };
const start = performance.now();
const out = await graph.invoke({ target: n }, config);
const ms = performance.now() - start;
if (out.messages.length !== n) throw new Error(`${out.messages.length} messages, want ${n}`);

let total = 0;
for (const r of await sizes()) {
  total += r.bytes;
  const e = empty.find((x) => x.table === r.table)?.bytes ?? 0;
  console.log(`${r.table}\t${r.bytes}\t(empty ${e})`);
}
const counts = await admin.query(`SELECT (SELECT count(*) FROM ${schema}.checkpoints) AS checkpoints,
  (SELECT count(*) FROM ${schema}.checkpoint_blobs) AS blobs, (SELECT count(*) FROM ${schema}.checkpoint_writes) AS writes`);
console.log(`total\t${total}\t(${(total / 1024).toFixed(0)} KB; ${JSON.stringify(counts.rows[0])})`);
console.log(`empty\t${emptyTotal}\t(${(emptyTotal / 1024).toFixed(0)} KB after setup())`);
console.log(`thread\t${total - emptyTotal}\t(${((total - emptyTotal) / 1024).toFixed(0)} KB: total minus empty)`);
console.log(`steps\t${n}\t${((ms * 1000) / n).toFixed(0)} µs/step`);
await saver.end();
// Leave nothing behind unless asked to (KEEP=1 keeps the tables to look at).
if (process.env.KEEP !== "1") await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
await admin.end();
