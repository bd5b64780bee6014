// The page's only script (stages/core/page.py): sort and filter the experiment table, show one judge's columns,
// browse the replies. Untrusted text goes in through textContent, never as markup.
(function () {
  const data = JSON.parse(document.getElementById("data").textContent);
  const $ = (id) => document.getElementById(id);
  const element = (tag, text, className) => {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (className) e.className = className;
    return e;
  };

  // The experiment table: rows are written by the page generator, each cell with its sort key.
  const table = $("exp-table");
  const body = table.tBodies[0];
  const rows = () => [...body.rows];
  const showCount = () => {
    $("exp-count").textContent = `${rows().filter((r) => !r.hidden).length} of ${body.rows.length} experiments`;
  };
  const showJudge = () => {
    const judge = $("judge-select").value;
    table.querySelectorAll("[data-judge]").forEach((cell) => {
      cell.hidden = cell.dataset.judge !== judge;
    });
  };
  const isNumber = (v) => v !== "" && !isNaN(v);
  [...table.tHead.rows[0].cells].forEach((th, column) =>
    th.addEventListener("click", () => {
      const up = th.dataset.dir !== "up";
      th.dataset.dir = up ? "up" : "down";
      const key = (row) => row.cells[column].dataset.sort;
      rows()
        .sort((a, b) => {
          const x = key(a), y = key(b);
          const order = isNumber(x) && isNumber(y) ? x - y : String(x).localeCompare(String(y));
          return up ? order : -order;
        })
        .forEach((row) => body.appendChild(row));
    })
  );
  $("exp-filter").addEventListener("input", (event) => {
    const query = event.target.value.toLowerCase();
    rows().forEach((row) => {
      row.hidden = query !== "" && !row.textContent.toLowerCase().includes(query);
    });
    showCount();
  });
  $("judge-select").addEventListener("change", showJudge);
  showJudge();
  showCount();

  // The reply browser. A reply: [run, model, prompt, text, tokens, refusal, [reward per judge], [label per judge]];
  // a prompt: [set, id, text]; texts are indices into data.strings.
  const text = data.strings;
  const prompts = data.prompts;
  data.runs.forEach((name, i) => $("run-select").appendChild(new Option(name, i)));
  [...new Set(prompts.map((p) => p[0]))].forEach((set) => $("set-select").appendChild(new Option(set, set)));
  const inRun = () =>
    data.replies.filter(
      (r) => r[0] === +$("run-select").value && ($("set-select").value === "" || prompts[r[2]][0] === $("set-select").value)
    );
  const shown = (r) => {
    const labels = r[7].filter((v) => v !== null);
    const low = +$("min-tokens").value || 0;
    const high = $("max-tokens").value;
    return (
      (!$("disagree").checked || new Set(labels).size > 1) &&
      (!$("refusal").checked || r[5] === 1) &&
      r[4] >= low &&
      (high === "" || r[4] <= +high)
    );
  };
  const lastTurn = (prompt) => {
    const at = prompt.lastIndexOf("Human:");
    return (at < 0 ? prompt : prompt.slice(at + 6)).trim().split("\n")[0];
  };

  function listPrompts() {
    const select = $("prompt-select");
    const before = select.value;
    select.textContent = "";
    const ids = [...new Set(inRun().filter(shown).map((r) => r[2]))].sort((a, b) => a - b);
    ids.forEach((i) => {
      const [set, id, prompt] = prompts[i];
      select.appendChild(new Option(`${set} #${id}: ${lastTurn(text[prompt]).slice(0, 90)}`, i));
    });
    if (before !== "" && ids.includes(+before)) select.value = before;
    $("prompt-count").textContent = `${ids.length} prompts`;
    showReplies();
  }

  function showReplies() {
    const grid = $("reply-grid");
    const select = $("prompt-select");
    grid.textContent = "";
    $("prompt-text").textContent = "";
    if (select.value === "") return;
    const prompt = +select.value;
    $("prompt-text").textContent = text[prompts[prompt][2]];
    inRun()
      .filter((r) => r[2] === prompt)
      .forEach((r) => {
        const box = element("div", undefined, "reply");
        box.dataset.model = data.models[r[1]];
        box.appendChild(element("h4", data.models[r[1]]));
        box.appendChild(element("pre", text[r[3]], "reply-text"));
        const judged = data.judges.map((judge, k) => {
          const label = r[7][k] === null ? "" : r[7][k] ? " ok" : " not ok";
          return `${judge}: ${r[6][k] === null ? "-" : r[6][k]}${label}`;
        });
        box.appendChild(element("div", `${r[4]} tokens${r[5] ? ", refusal" : ""} · ${judged.join(" · ")}`, "note"));
        grid.appendChild(box);
      });
  }

  ["run-select", "set-select", "disagree", "refusal", "min-tokens", "max-tokens"].forEach((id) =>
    $(id).addEventListener("input", listPrompts)
  );
  $("prompt-select").addEventListener("change", showReplies);
  listPrompts();
})();
