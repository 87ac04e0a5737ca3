// Drives the service's AG-UI endpoint with the official client: a plain run, a run that
// waits for an approval and the run that resumes it, and a run that calls a frontend tool
// and the run that carries its result. Prints what the subscriber saw.
import { HttpAgent } from "@ag-ui/client";

const [url, stamp] = process.argv.slice(2);

async function run(agent, parameters) {
  const seen = [];
  await agent.runAgent(parameters, { onEvent: ({ event }) => void seen.push(event) });
  return seen;
}

const plain = new HttpAgent({ url, threadId: `plain-${stamp}` });
plain.messages = [{ id: "m1", role: "user", content: "Hello" }];
const hello = await run(plain, { runId: "run-1" });

const approving = new HttpAgent({ url, threadId: `approval-${stamp}` });
approving.messages = [{ id: "m2", role: "user", content: '/tool close_account {"account": "42"}' }];
const paused = await run(approving, { runId: "run-2" });
const interrupts = paused.at(-1).outcome.interrupts;
const resume = interrupts.map((interrupt) => ({
  interruptId: interrupt.id,
  status: "resolved",
  payload: { decision: "approve" },
}));
const resumed = await run(approving, { runId: "run-3", resume });

const chart = {
  name: "show_chart",
  description: "Draw a chart on the page.",
  parameters: { type: "object", properties: { kind: { type: "string" } }, required: ["kind"] },
};
const page = new HttpAgent({ url, threadId: `frontend-${stamp}` });
page.messages = [{ id: "m3", role: "user", content: '/tool show_chart {"kind": "bar"}' }];
const called = await run(page, { runId: "run-4", tools: [chart] });
// The page runs the tool and adds its result, as a CopilotKit action does.
const call = called.find((event) => event.type === "TOOL_CALL_START");
page.messages.push({ id: "m4", role: "tool", toolCallId: call.toolCallId, content: "drawn" });
const continued = await run(page, { runId: "run-5", tools: [chart] });

console.log(
  JSON.stringify({
    hello,
    paused,
    resumed,
    messages: approving.messages,
    called,
    continued,
    pageMessages: page.messages,
  }),
);
