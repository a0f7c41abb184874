/**
 * Midscene.js on a GLM-V model that runs on your own machine behind `glmv-agent serve`.
 *
 *   glmv-agent serve --model model/GLM-4.1V-9B-Thinking --model-name glm-4.1v
 *   cd examples/midscene && cp .env.example .env && npm install && npx tsx demo.ts
 *
 * Midscene reads the model settings from the environment (.env.example lists them):
 * MIDSCENE_MODEL_BASE_URL (the server's /v1), MIDSCENE_MODEL_API_KEY, MIDSCENE_MODEL_NAME
 * (the served name) and MIDSCENE_MODEL_FAMILY="glm-v", the adapter that reads GLM's
 * 0-1000 bounding boxes. The page is a small to-do app written into the browser, so the
 * demo needs no network.
 */
import "dotenv/config";
import puppeteer from "puppeteer";
import { PuppeteerAgent } from "@midscene/web/puppeteer";

const TODO_APP = `<!doctype html>
<html><head><meta charset="utf-8"><title>To-do</title>
<style>
  body { font: 20px sans-serif; margin: 40px; }
  input { font: inherit; width: 360px; padding: 6px; }
  button { font: inherit; padding: 6px 18px; margin-left: 8px; }
  li { margin: 8px 0; }
</style></head>
<body>
  <h1>To-do</h1>
  <form id="add">
    <input id="text" placeholder="What needs to be done?" aria-label="New to-do">
    <button type="submit">Add</button>
  </form>
  <ul id="items"></ul>
  <script>
    document.getElementById("add").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = document.getElementById("text");
      if (!input.value.trim()) return;
      const item = document.createElement("li");
      item.textContent = input.value.trim();
      document.getElementById("items").append(item);
      input.value = "";
    });
  </script>
</body></html>`;

for (const name of ["MIDSCENE_MODEL_BASE_URL", "MIDSCENE_MODEL_NAME", "MIDSCENE_MODEL_FAMILY"]) {
  if (!process.env[name]) {
    console.error(`${name} is not set: copy .env.example to .env and adjust it`);
    process.exit(2);
  }
}

const browser = await puppeteer.launch({
  headless: true,
  executablePath: process.env.CHROME_PATH || undefined,
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 800, deviceScaleFactor: 1 });
  await page.setContent(TODO_APP);
  const agent = new PuppeteerAgent(page);

  // Locate + act: each is one model call that returns a bounding box.
  await agent.aiInput("the 'What needs to be done?' text box", { value: "Buy milk" });
  await agent.aiTap("the Add button");

  // Insight: the answer comes back as JSON inside Midscene's XML reply format.
  const items = await agent.aiQuery<string[]>("string[], the texts of the to-do items");
  console.log("to-do items:", items);
  await agent.aiAssert("the list contains an item 'Buy milk'");
  const add = await agent.aiLocate("the Add button");
  console.log("Add button at", add.center);

  // Planning: Midscene asks the model for one step at a time until it reports completion.
  await agent.aiAct("add a to-do item 'Walk the dog'");
  console.log("after aiAct:", await page.$$eval("#items li", (li) => li.map((e) => e.textContent)));
} finally {
  await browser.close();
}
