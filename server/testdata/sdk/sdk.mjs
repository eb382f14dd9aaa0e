// Drives `lgrun serve` with the unmodified LangGraph JS SDK. Run by
// server/sdk_test.go with LGRUN_URL set to a server of the graphs in
// ../sdk-graphs. Prints "ok <name>" per check; exits 1 at the first failure.
import { Client } from "@langchain/langgraph-sdk";
import assert from "node:assert/strict";

const client = new Client({ apiUrl: process.env.LGRUN_URL, apiKey: process.env.LGRUN_KEY });
const ok = (name) => console.log("ok " + name);
async function collect(gen) {
  const out = [];
  for await (const part of gen) out.push(part);
  return out;
}
const SLOW = { input: { target: 3000 }, config: { recursion_limit: 10000 } };

// assistants
const assistants = await client.assistants.search({ graphId: "approval" });
assert.equal(assistants.length, 1);
assert.equal(assistants[0].graph_id, "approval");
const schemas = await client.assistants.getSchemas(assistants[0].assistant_id);
assert.equal(schemas.state_schema.properties.revision.type, "integer");
const graph = await client.assistants.getGraph("approval");
assert.ok(graph.nodes.some((n) => n.id === "ask"));
const mine = await client.assistants.create({ graphId: "loop", name: "short", config: { recursion_limit: 3 }, metadata: { team: "a" } });
assert.equal(mine.graph_id, "loop");
assert.equal((await client.assistants.search({ graphId: "loop" })).length, 2);
assert.equal((await client.assistants.search({ metadata: { team: "a" } }))[0].assistant_id, mine.assistant_id);
const limited = await client.runs.wait(null, mine.assistant_id, { input: { target: 10 } }).catch((e) => e);
assert.match(String(limited), /step limit of 3/);
const patched = await client.assistants.update(mine.assistant_id, { name: "shorter" });
assert.equal(patched.name, "shorter");
assert.equal(patched.version, 2);
const versions = await client.assistants.getVersions(mine.assistant_id);
assert.deepEqual(versions.map((v) => [v.version, v.name]), [[2, "shorter"], [1, "short"]]);
const back = await client.assistants.setLatest(mine.assistant_id, 1);
assert.deepEqual([back.version, back.name], [1, "short"]);
assert.equal((await client.assistants.update(mine.assistant_id, { name: "third" })).version, 3);
await assert.rejects(client.assistants.update(assistants[0].assistant_id, { name: "x" }), /409/);
await client.assistants.delete(mine.assistant_id);
await assert.rejects(client.assistants.get(mine.assistant_id), /404/);
ok("assistants");

// threads: create with if_exists, get, search, count, update metadata, copy, delete
const t = await client.threads.create({ metadata: { user: "ann" } });
const again = await client.threads.create({ threadId: t.thread_id, ifExists: "do_nothing" });
assert.equal(again.thread_id, t.thread_id);
await assert.rejects(client.threads.create({ threadId: t.thread_id }), /409/);
await client.threads.update(t.thread_id, { metadata: { team: "x" } });
const got = await client.threads.get(t.thread_id);
assert.deepEqual(got.metadata, { user: "ann", team: "x" });
assert.equal(got.status, "idle");
const found = await client.threads.search({ metadata: { user: "ann" } });
assert.ok(found.some((x) => x.thread_id === t.thread_id));
assert.ok((await client.threads.count({ metadata: { team: "x" } })) >= 1);
ok("threads");

// stream with several modes, then wait
const parts = await collect(client.runs.stream(t.thread_id, "loop", { input: { target: 2 }, streamMode: ["values", "updates", "debug", "tasks", "checkpoints"] }));
assert.equal(parts[0].event, "metadata");
const events = new Set(parts.map((p) => p.event));
for (const e of ["values", "updates", "debug", "tasks", "checkpoints"]) assert.ok(events.has(e), "no " + e + " event");
const results = parts.filter((p) => p.event === "tasks" && p.data.result).map((p) => p.data.name);
assert.deepEqual(results, ["increment", "increment", "finish"]);
assert.deepEqual(parts.filter((p) => p.event === "checkpoints").map((p) => p.data.next), [["increment"], ["increment"], ["finish"], []]);
const updates = parts.filter((p) => p.event === "updates").map((p) => Object.keys(p.data)[0]);
assert.deepEqual(updates, ["increment", "increment", "finish"]);
const lastValues = parts.filter((p) => p.event === "values").at(-1).data;
assert.equal(lastValues.count, 2);
const waited = await client.runs.wait(t.thread_id, "loop", { input: { target: 4 } });
assert.equal(waited.count, 4);
const runs = await client.runs.list(t.thread_id);
assert.equal(runs.length, 2);
assert.ok(runs.every((r) => r.status === "success"));
ok("stream modes and wait");

// thread-less runs
const stateless = await client.runs.wait(null, "loop", { input: { target: 1 } });
assert.equal(stateless.count, 1);
const sparts = await collect(client.runs.stream(null, "loop", { input: { target: 1 } }));
assert.equal(sparts[0].event, "metadata");
ok("thread-less runs");

// interrupt node and resume with a Command (resume + update)
const h = await client.threads.create();
const paused = await client.runs.wait(h.thread_id, "approval", { input: { topic: "sdk" } });
assert.equal(paused.__interrupt__.length, 1);
assert.equal(paused.__interrupt__[0].value.question, "Approve this draft?");
assert.equal((await client.threads.get(h.thread_id)).status, "interrupted");
const done = await client.runs.wait(h.thread_id, "approval", { command: { resume: { approved: true }, update: { topic: "sdk2" } } });
assert.equal(done.published, true);
assert.equal(done.topic, "sdk2");
assert.equal((await client.threads.get(h.thread_id)).status, "idle");
const g = await client.threads.create();
await client.runs.wait(g.thread_id, "approval", { input: {} });
const went = await client.runs.wait(g.thread_id, "approval", { command: { goto: "revise", update: { review: { feedback: "shorter" } } } });
assert.equal(went.revision, 1);
assert.ok(went.draft.endsWith("[revised: shorter]"));
assert.equal(went.__interrupt__[0].value.revision, 1); // asks again after the revision
ok("interrupt and resume with command (resume, update, goto)");

// interrupt before a node, continue with null input
const b = await client.threads.create();
const before = await client.runs.wait(b.thread_id, "loop", { input: { target: 2 }, interruptBefore: ["finish"] });
assert.equal(before.count, 2);
let st = await client.threads.getState(b.thread_id);
assert.deepEqual(st.next, ["finish"]);
const cont = await client.runs.wait(b.thread_id, "loop", { input: null });
assert.ok(cont.log.includes("done at 2"));
ok("interrupt_before and continue");

// update state as a node; history newest first; fork from an old checkpoint
const u = await client.threads.create();
await client.runs.wait(u.thread_id, "loop", { input: { target: 3 } });
const upd = await client.threads.updateState(u.thread_id, { values: { target: 5 }, asNode: "increment" });
assert.ok(upd.checkpoint.checkpoint_id);
st = await client.threads.getState(u.thread_id);
assert.equal(st.values.target, 5);
assert.deepEqual(st.next, ["increment"]);
assert.equal(st.metadata.source, "update");
const resumed = await client.runs.wait(u.thread_id, "loop", { input: null });
assert.equal(resumed.count, 5);
const hist = await client.threads.getHistory(u.thread_id, { limit: 100 });
for (let i = 1; i < hist.length; i++) assert.ok(hist[i - 1].checkpoint.checkpoint_id > hist[i].checkpoint.checkpoint_id);
const two = await client.threads.getHistory(u.thread_id, { limit: 2 });
assert.equal(two.length, 2);
const older = await client.threads.getHistory(u.thread_id, { limit: 1, before: { configurable: { checkpoint_id: two[1].checkpoint.checkpoint_id } } });
assert.equal(older[0].checkpoint.checkpoint_id, hist[2].checkpoint.checkpoint_id);
const inputs = await client.threads.getHistory(u.thread_id, { limit: 100, metadata: { source: "input" } });
assert.equal(inputs.length, 1);
const first = inputs[0]; // count 0, before the first increment
const atOld = await client.threads.getState(u.thread_id, first.checkpoint.checkpoint_id);
assert.equal(atOld.values.count, 0);
const fork = await client.runs.wait(u.thread_id, "loop", { input: null, checkpointId: first.checkpoint.checkpoint_id });
assert.equal(fork.count, 3);
const copy = await client.threads.copy(u.thread_id);
assert.notEqual(copy.thread_id, u.thread_id);
assert.deepEqual((await client.threads.getState(copy.thread_id)).values, (await client.threads.getState(u.thread_id)).values);
assert.equal((await client.threads.getHistory(copy.thread_id, { limit: 100 })).length, (await client.threads.getHistory(u.thread_id, { limit: 100 })).length);
const seeded = await client.threads.create({ graphId: "loop", supersteps: [
  { updates: [{ values: { target: 2 } }] },
  { updates: [{ values: { count: 1 }, asNode: "increment" }] },
] });
const seededState = await client.threads.getState(seeded.thread_id);
assert.deepEqual([seededState.values.count, seededState.values.target, seededState.next], [1, 2, ["increment"]]);
assert.equal((await client.runs.wait(seeded.thread_id, "loop", { input: null })).count, 2);
const fresh = await client.threads.create({ graphId: "loop" });
await client.threads.updateState(fresh.thread_id, { values: { count: 4 } });
assert.equal((await client.threads.getState(fresh.thread_id)).values.count, 4);
ok("update state, history, fork, copy, supersteps");

// multitask strategies
const m = await client.threads.create();
const r1 = await client.runs.create(m.thread_id, "loop", SLOW);
await assert.rejects(client.runs.create(m.thread_id, "loop", { input: { target: 1 }, multitaskStrategy: "reject" }), /409/);
const r2 = await client.runs.create(m.thread_id, "loop", { input: { target: 1 }, multitaskStrategy: "enqueue" });
await client.runs.join(m.thread_id, r2.run_id);
const e1 = await client.runs.get(m.thread_id, r1.run_id);
const e2 = await client.runs.get(m.thread_id, r2.run_id);
assert.equal(e1.status, "success");
assert.equal(e2.status, "success");
ok("multitask reject and enqueue");

const mi = await client.threads.create();
const i1 = await client.runs.create(mi.thread_id, "loop", SLOW);
await new Promise((r) => setTimeout(r, 200));
const i2 = await client.runs.create(mi.thread_id, "loop", { input: { target: 1 }, multitaskStrategy: "interrupt", config: { recursion_limit: 10000 } });
await client.runs.join(mi.thread_id, i2.run_id);
assert.equal((await client.runs.get(mi.thread_id, i1.run_id)).status, "interrupted");
assert.equal((await client.runs.get(mi.thread_id, i2.run_id)).status, "success");
ok("multitask interrupt");

const mr = await client.threads.create();
const k1 = await client.runs.create(mr.thread_id, "loop", SLOW);
await new Promise((r) => setTimeout(r, 200));
const k2 = await client.runs.create(mr.thread_id, "loop", { input: { target: 2 }, multitaskStrategy: "rollback" });
const kv = await client.runs.join(mr.thread_id, k2.run_id);
assert.equal(kv.count, 2);
assert.deepEqual(kv.log, ["count=1", "count=2", "done at 2"]);
await assert.rejects(client.runs.get(mr.thread_id, k1.run_id), /404/);
ok("multitask rollback");

// cancel
const c = await client.threads.create();
const c1 = await client.runs.create(c.thread_id, "loop", SLOW);
await new Promise((r) => setTimeout(r, 200));
await client.runs.cancel(c.thread_id, c1.run_id, true);
assert.equal((await client.runs.get(c.thread_id, c1.run_id)).status, "interrupted");
await client.runs.delete(c.thread_id, c1.run_id);
await assert.rejects(client.runs.get(c.thread_id, c1.run_id), /404/);
ok("cancel and delete");

// batch create, cancel many, thread-less join stream, prune
const bt = await client.threads.create();
const batch = await client.runs.createBatch([
  { assistantId: "loop", threadId: bt.thread_id, input: { target: 2 } },
  { assistantId: "loop", input: { target: 3 } },
]);
assert.equal(batch.length, 2);
assert.equal((await client.runs.join(bt.thread_id, batch[0].run_id)).count, 2);
const cm = await client.threads.create();
const cm1 = await client.runs.create(cm.thread_id, "loop", SLOW);
const cm2 = await client.runs.create(cm.thread_id, "loop", { input: { target: 1 } });
await client.runs.cancelMany({ threadId: cm.thread_id, status: "all" });
await client.runs.join(cm.thread_id, cm2.run_id);
assert.equal((await client.runs.get(cm.thread_id, cm1.run_id)).status, "interrupted");
assert.equal((await client.runs.get(cm.thread_id, cm2.run_id)).status, "interrupted");
const tl = await client.threads.create();
const tlr = await client.runs.create(tl.thread_id, "loop", { input: { target: 5 }, streamResumable: true, streamMode: ["updates"] });
const tlparts = await collect(client.runs.joinStream(null, tlr.run_id, { lastEventId: "-1" }));
assert.equal(tlparts.filter((p) => p.event === "updates").length, 6);
assert.deepEqual(await client.threads.prune([tl.thread_id, cm.thread_id]), { pruned_count: 2 });
await assert.rejects(client.threads.get(tl.thread_id), /404/);
ok("batch, cancelMany, thread-less joinStream, prune");

// a resumable stream rejoined mid-run loses no event
const rs = await client.threads.create();
const full = [];
let runId;
for await (const part of client.runs.stream(rs.thread_id, "loop", {
  input: { target: 300 }, config: { recursion_limit: 1000 }, streamMode: ["updates"], streamResumable: true, onDisconnect: "continue",
  onRunCreated: (m) => { runId = m.run_id; },
})) {
  full.push(part);
  if (full.length === 20) break; // drop the connection mid-run
}
assert.ok(runId);
const lastId = String(full.length - 1);
const rest = await collect(client.runs.joinStream(rs.thread_id, runId, { lastEventId: lastId }));
const all = [...full, ...rest].filter((p) => p.event === "updates");
assert.equal(all.length, 301);
const replay = await collect(client.runs.joinStream(rs.thread_id, runId, { lastEventId: "-1" }));
assert.equal(replay.filter((p) => p.event === "updates").length, 301);
ok("resumable stream reconnect");

// many threads at once
const many = await Promise.all(Array.from({ length: 12 }, async (_, i) => {
  const th = await client.threads.create();
  return client.runs.wait(th.thread_id, "loop", { input: { target: i + 1 }, config: { recursion_limit: 100 } });
}));
many.forEach((v, i) => assert.equal(v.count, i + 1));
ok("concurrent threads");

// messages-tuple: the token chunks of an llm node; LangChain messages in and out
const chat = await client.threads.create();
const mparts = await collect(client.runs.stream(chat.thread_id, "memory-chat", {
  input: { question: "Remember that my favorite editor is vim." }, streamMode: ["messages-tuple", "values"],
}));
const chunks = mparts.filter((p) => p.event === "messages");
assert.ok(chunks.length > 1, "no token chunks");
assert.equal(chunks.map((p) => p.data[0].content).join(""), "Got it: your favorite editor is vim.");
assert.equal(chunks[0].data[1].langgraph_node, "chat");
const mv = mparts.filter((p) => p.event === "values").at(-1).data;
assert.equal(mv.messages.at(-1).type, "ai");
const turn2 = await client.runs.wait(chat.thread_id, "memory-chat", {
  input: { question: "What editor do I like?", messages: [{ type: "human", content: [{ type: "text", text: "a note" }] }] },
});
assert.equal(turn2.answer, "You told me your favorite editor is vim.");
assert.ok(turn2.messages.some((m) => m.type === "human" && m.content === "a note"));
ok("messages-tuple and LangChain messages");

// subgraph events only with stream_subgraphs
const sg = await collect(client.runs.stream(null, "team", { input: {}, streamMode: ["updates"], streamSubgraphs: true }));
assert.ok(sg.some((p) => p.event.startsWith("updates|")), "no subgraph events");
const nosg = await collect(client.runs.stream(null, "team", { input: {}, streamMode: ["updates"] }));
assert.ok(nosg.length > 2 && !nosg.some((p) => p.event.includes("|")));
const subs = await client.assistants.getSubgraphs("team");
assert.deepEqual(Object.keys(subs).sort(), ["code", "research"]);
assert.equal(subs.research.graph_id, "research-agent");
assert.ok(subs.research.state_schema.properties);
ok("stream_subgraphs, getSubgraphs");

// errors reach the SDK
await assert.rejects(client.runs.wait(t.thread_id, "nope", { input: {} }), /404/);
await assert.rejects(client.threads.get("no-such-thread"), /404/);
const failed = await client.runs.wait((await client.threads.create()).thread_id, "loop", { input: { target: 50 } }).catch((e) => e);
assert.match(String(failed), /GraphRecursionError|step limit/);
await client.threads.delete(t.thread_id);
await assert.rejects(client.threads.get(t.thread_id), /404/);
ok("errors");
process.exit(0);
