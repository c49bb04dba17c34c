"""``docs.session``: append what a run found to a session document, never rewriting it.

The section holds the date, the workflow's parameters, the pod and its price, the run's
duration and cost, the measures and verdicts of ``images.evaluate``, the before/after
picture, a table of a sweep's variants with the best marked, and either the optimal
parameters (success) or the most likely next lead read from the evidence (failure).

It is a clean-up handler: it also runs after an earlier task failed, because a failed
experiment is exactly what the next lead must be written for.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from ralph.handlers.facts import ComfyServer, Evaluation, Images, MachineHandle, MachineTime

from ralph.context import Context, EstimateContext
from ralph.handler import Estimate, Evidence, Handler, Param, Result, criterion
from ralph.model import Task, TaskFile
from ralph.state import now

DEFAULT_FOLDER = "docs/sessions"
# Grain ratios of a sweep's variants that all lie within this band did not move with the
# swept parameter: the band is the measure's same-image spread (≈1 %) plus the 10 % a
# visible change needs (a 10 % change reads 0.89, below what the grain verdict accepts).
FLAT_SPREAD = 0.10
OPTIMAL = "**Optimal parameters**:"
LEAD = "**Next lead**:"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _doc_path(file: TaskFile, task: Task, params: dict[str, Any]) -> str:
    if params["path"]:
        return str(params["path"])
    found = task.fields.get("session doc")
    if found and found.value.strip():
        return found.value.strip().strip("`")
    return f"{DEFAULT_FOLDER}/{file.path.stem}.md"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# Long text parameters (prompts) are written once, in their own block, never inline.
PROSE = 60


def _is_prose(value: Any) -> bool:
    return isinstance(value, str) and (len(value) > PROSE or " " in value.strip())


def _params_text(params: dict[str, Any], short: bool = False) -> str:
    """``k=v`` list; ``short`` leaves out prompts (written once elsewhere)."""
    items = {k: v for k, v in params.items() if not (short and _is_prose(v))}
    return ", ".join(f"`{k}={_fmt(v)}`" for k, v in items.items()) or "none recorded"


def _ran_params(ctx: Context, ranking: list[dict[str, Any]]) -> dict[str, Any]:
    """What actually ran: the best (else first) image's parameters, which comfyui.run records after
    ralph.yaml, the task's overrides and the sweep; the swept values; the workflow as a fallback."""
    made = ctx.fact(Images) or Images([])
    images = list(made.images)
    rows = ranking or images
    params = dict((rows[0].get("params") if rows else None) or made.workflow or {})
    swept = {k: sorted({json.dumps((r.get("params") or {}).get(k), default=str) for r in images})
             for k in _varying(images)} if len(images) > 1 else {}
    return {"params": params, "swept": {k: [json.loads(v) for v in vs] for k, vs in swept.items()}}


def _last_params(doc: Path) -> dict[str, Any] | None:
    """The parameters the previous session in this document recorded, if any."""
    try:
        text = doc.read_text("utf-8")
    except OSError:
        return None
    found = re.findall(r"<!-- ralph:params (\{.*?\}) -->", text)
    try:
        return json.loads(found[-1]) if found else None
    except ValueError:
        return None


def _params_section(ran: dict[str, Any], previous: dict[str, Any] | None) -> list[str]:
    params, swept = ran["params"], ran["swept"]
    plain = {k: v for k, v in params.items() if not _is_prose(v)}
    lines: list[str] = []
    if swept:
        lines.append("- **Swept**: " + "; ".join(f"`{k}` {' / '.join(_fmt(v) for v in vs)}" for k, vs in swept.items()))
    if previous is None:
        lines += ["", "| Parameter | Value |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in plain.items()]
    else:
        changed = [k for k in dict.fromkeys([*previous, *plain]) if not _is_prose(previous.get(k, params.get(k)))
                   and previous.get(k) != params.get(k)]
        if changed:
            lines += ["", "Changed since the previous session:", "",
                      "| Parameter | Previous | This run |", "|---|---|---|"]
            lines += [f"| {k} | {_cell(previous.get(k, '–'))} | {_cell(params.get(k, '–'))} |" for k in changed]
        else:
            lines.append("- Same parameters as the previous session" + (" (apart from the sweep)" if swept else ""))
        prompts_changed = [k for k, v in params.items() if _is_prose(v) and previous.get(k) != v]
        if not prompts_changed:
            return lines + ["- Prompts: unchanged since the previous session"]
    for key, value in params.items():
        if _is_prose(value):
            lines += ["", f"**{key}**:", "", "> " + str(value).replace("\n", "\n> ")]
    return lines


def _cell(value: Any) -> str:
    return _fmt(value).replace("|", "\\|")


def _versions(ctx: Context) -> str:
    """What ran, as comfyui.setup recorded it: ComfyUI's version and commit, each custom node's
    commit, torch's version, each model by its sha256; a warning when the pin was not applied."""
    server = ctx.fact(ComfyServer, even_released=True)
    if server is None:
        return ""
    checkout = ", ".join(x for x in (server.tag, f"commit `{server.commit[:12]}`" if server.commit else "") if x)
    comfyui = " ".join(x for x in (server.version, f"({checkout})" if checkout else "") if x)
    parts = [f"ComfyUI {comfyui}"] if comfyui else []
    parts += [f"{name} commit `{commit[:12]}`" if commit else f"{name} (not a git checkout)"
              for name, commit in server.custom_nodes.items()]
    parts += [f"torch {server.torch}"] if server.torch else []
    parts += [f"`{name}` sha256 `{sha[:12]}…`" if sha else f"`{name}` (no hash recorded)"
              for name, sha in server.sha256.items()]
    parts += [f"WARNING: {server.unpinned}"] if server.unpinned else []
    return ", ".join(parts)


def _incomplete(ctx: Context) -> list[str]:
    """Earlier tasks that an interruption left unfinished (they say "incomplete", never "not met")."""
    return [f"task {t.number} ({t.title}) was interrupted" for t in ctx.file.tasks
            if t.number < ctx.task.number and (record := ctx.records.get(t.number)) and record.status == "IN_PROGRESS"]


def _headline(success: bool | None, failures: list[str], incomplete: list[str], lead: str | None,
              ranking: list[dict[str, Any]]) -> str:
    """The session in one line, first thing in its section."""
    if incomplete:
        return f"incomplete: {incomplete[0]}; run again to finish"
    if failures:
        return f"failed: {failures[0]}"
    if success:
        best = f" (best: {ranking[0].get('variant')})" if len(ranking) > 1 else ""
        return f"grain reduced{best}"
    if success is False:
        return f"not a success: {lead or 'see the measures'}"
    return f"not established: {lead or 'a person must look at the images'}"


def _beside(ctx: Context, doc: Path, picture: str) -> str:
    """A copy of ``picture`` in a folder beside the document (``<doc>/<run id>/``), so that the link
    survives a commit of docs/ while output/ stays ignored; the link, relative to the document."""
    source = ctx.path(picture)
    target = doc.parent / doc.stem / ctx.run_id / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    shutil.copyfile(source, partial)
    os.replace(partial, target)
    return quote(os.path.relpath(target, doc.parent).replace(os.sep, "/"))


def _varying(rows: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for row in rows:
        for key in row.get("params") or {}:
            if key not in keys and len({json.dumps((r.get("params") or {}).get(key), default=str) for r in rows}) > 1:
                keys.append(key)
    return keys


def _span(values: list[Any]) -> str:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) == len(values):
        return f"{_fmt(min(numbers))}–{_fmt(max(numbers))}"
    return "/".join(dict.fromkeys(str(v) for v in values))


def next_lead(
    grain: dict[str, Any] | None,
    ranking: list[dict[str, Any]],
    lint: list[str],
    failures: list[str],
    colour: dict[str, Any] | None,
) -> str | None:
    """The most likely next thing to try, from the evidence; None when nothing failed."""
    if grain is None:
        if failures:
            return f"the experiment did not get to an evaluation: {failures[0]}; fix that and run again"
        return None
    verdict = grain.get("verdict")
    if verdict == "less grain":
        if colour and colour.get("verified") is False:
            return f"grain went down but {colour.get('explanation')}: lower cfg or the refiner's denoise"
        return None
    if verdict == "no previous image":
        return ("no previous image to compare with: name one with a **Previous**: line "
                "(this run's best is kept for the next run)")
    if verdict == "blur not checked":
        return (
            f"grain fell (ratio {grain.get('ratio')}) but detail could not be compared, so a blur is not ruled out: "
            "look at the zoomed crops, or compare with an image of the same seed and a textured subject"
        )
    if verdict == "not measurable":
        return ("the images have no flat areas where grain can be measured: compare crops by eye, "
                "or prompt a plainer background")
    if verdict == "detail lost":
        return (
            f"the image was smoothed, not de-grained (detail x{grain.get('detail_ratio')}): lower the refiner's "
            "denoise "
            "or steps, and check for a blur or resize step"
        )
    if verdict == "grain coarser":
        return (
            f"the grain became coarser clumps (coarse x{grain.get('coarse_ratio')}), it did not go away: "
            "lower the refiner's denoise or try another sampler/scheduler"
        )
    if lint:
        more = f" (and {len(lint) - 1} more lint finding(s))" if len(lint) > 1 else ""
        return f"fix what the workflow check found first: {lint[0]}{more}"
    keys = _varying(ranking)
    ratios = [r["ratio"] for r in ranking
              if r.get("ratio") is not None and r.get("against") == ranking[0].get("against")]
    if keys and len(ratios) > 1:
        spans = ", ".join(f"{k} {_span([(r.get('params') or {}).get(k) for r in ranking])}" for k in keys)
        if max(ratios) - min(ratios) <= FLAT_SPREAD:
            elsewhere = ("the checkpoint/LoRA or the VAE" if {"sampler", "scheduler"} & set(keys)
                         else "the sampler/scheduler")
            return f"grain unchanged across {spans} (ratios {min(ratios):.2f}–{max(ratios):.2f}): look at {elsewhere}"
        best = ranking[0].get("params") or {}
        at = _params_text({k: best.get(k) for k in keys})
        return (f"grain moved with {spans} but not enough (best ratio {min(ratios):.2f} at {at}): "
                "extend the sweep beyond that end")
    return f"grain not reduced (ratio {grain.get('ratio')}): sweep cfg and the refiner's denoise to find what moves it"


class SessionDoc(Handler):
    """Append this run's results to the session document (`path`, a `**Session doc**:` line, or
    docs/sessions/<task file>.md): parameters, pod, duration, cost, measures, before/after
    picture, variants table, and the optimal parameters or the next lead. Never rewrites it."""

    name = "docs.session"
    cleanup = True  # a failed experiment is documented too: that is where the next lead is written
    params = {"path": Param((str, type(None)), None, "the session document (relative to the task file)")}

    def estimate(self, task: Task, params: dict[str, Any], context: EstimateContext) -> Estimate:
        return Estimate((f"appends the session to {_doc_path(context.file, task, params)}",))

    def run(self, ctx: Context) -> Result:
        relative = ctx.display_path(_doc_path(ctx.file, ctx.task, ctx.params))
        doc = ctx.path(relative)
        pending = ctx.memory.get("section")
        if ctx.task.status == "IN_PROGRESS" and pending and pending.get("path") == relative and _found(doc, pending):
            return Result(summary=f"section already appended to {relative} before the interruption",
                          data=pending["data"])
        if not any(r.result for n, r in ctx.records.items() if n < ctx.task.number):
            return Result(summary=f"nothing ran before this task: no section written to {relative}",
                          data={"session_doc": None, "nothing_ran": True})
        before = doc.read_bytes() if doc.exists() else b""
        marker = f"<!-- ralph:session {ctx.file.path.name} task {ctx.task.number} run {ctx.run_id} -->"
        text, data = self._section(ctx, doc, marker)
        if not before:
            text = f"# Sessions: {ctx.file.title}\n\n" + text
        elif not before.endswith(b"\n\n"):
            text = ("\n" if before.endswith(b"\n") else "\n\n") + text
        body = text.encode("utf-8")
        record = {
            "path": relative,
            "offset": len(before),
            "before_sha256": _sha(before),
            "section_sha256": _sha(body),
            "size": len(body),
            "marker": marker,
        }
        data["session_doc"] = record
        ctx.memory["section"] = {**record, "data": data}  # a resume finds it and does not append twice
        doc.parent.mkdir(parents=True, exist_ok=True)
        with open(doc, "ab") as handle:  # append only: what people wrote above is never touched
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        return Result(summary=f"appended a section to {relative}", data=data, files=[relative])

    def _section(self, ctx: Context, doc: Path, marker: str) -> tuple[str, dict[str, Any]]:
        records = ctx.records
        earlier = {n: r.result for n, r in records.items() if n < ctx.task.number and r.result is not None}
        made, machine = ctx.fact(Images) or Images([]), ctx.fact(MachineHandle, even_released=True)
        pod, lint = machine.record() if machine else {}, list(made.lint)
        found = ctx.fact(Evaluation) or Evaluation([])
        ranking, grain, colour, face_data = list(found.ranking), found.grain, found.colour, found.face
        previous, comparison, success = found.previous, found.comparison, found.success
        gallery, ranked = found.gallery, found.ranked
        failures = []
        for number in sorted(earlier):
            record = records[number]
            if record.status in ("FAILED", "BLOCKED"):
                task = ctx.file.task(number)
                failures.append(f"task {number} ({task.title if task else '?'}) {record.status.lower()}: "
                                f"{record.error or ''}")
        costs = {n: r["cost_usd"] for n, r in earlier.items() if r.get("cost_usd") is not None}
        seconds = sum(float(records[n].seconds or 0.0) for n in earlier)

        ran = _ran_params(ctx, ranking)
        previous_ran = _last_params(doc)
        incomplete = _incomplete(ctx)
        best_params = ran["params"]
        lead = None if success else next_lead(grain, ranking, lint, failures, colour)
        headline = _headline(success, failures, incomplete, lead, ranking)

        lines = [f"## Session {now()}: {ctx.file.title}", marker, "", f"**Verdict**: {headline}", ""]
        lines.append(f"- **Task file**: `{ctx.file.path.name}` (run {ctx.run_id})")
        if pod:
            price = f", ${pod['cost_per_hr']}/h" if pod.get("cost_per_hr") is not None else ""
            lines.append(f"- **Pod**: {pod.get('gpu', 'unknown GPU')}{price} (id `{pod.get('id', '?')}`)")
        else:
            lines.append("- **Pod**: none recorded")
        cost = (f"${sum(costs.values()):.4f} (recorded by task(s) {', '.join(map(str, sorted(costs)))})" if costs
                else "not recorded")
        held = ctx.fact(MachineTime)
        pod_time = f" (pod time {held.hours * 60:.1f} min)" if held is not None else ""
        lines.append(
            f"- **Duration**: {seconds / 60:.1f} min over tasks {', '.join(map(str, sorted(earlier))) or 'none'}"
            f"{pod_time}; **cost**: {cost}"
        )
        if previous:
            lines.append(f"- **Previous image**: `{previous['path']}` ({previous.get('source', '')})")
        if versions := _versions(ctx):
            lines.append(f"- **Versions**: {versions}")
        lines += ["", "### Parameters that ran", ""] + _params_section(ran, previous_ran)
        lines += ["", "### Measures", ""]
        if grain:
            lines.append(f"- **Grain**: {grain.get('explanation')}")
        if colour:
            lines.append(f"- **Colours**: {colour.get('explanation') or _colour_reading(colour)}")
        if face_data:
            from .images.face import judge

            lines.append(f"- **Face**: {judge(face_data, face_data.get('image'), face_data.get('previous')).detail}")
        if lint:
            lines += [f"- **Workflow check**: {finding}" for finding in lint]
        for failure in failures:
            lines.append(f"- **Failure**: {failure}")
        for entry in incomplete:
            lines.append(f"- **Incomplete**: {entry}")
        link = None
        if comparison:
            link = _beside(ctx, doc, comparison)
            lines += ["", f"![before/after: {comparison}]({link})"]
        gallery_links = None
        if gallery:
            gallery_links = {kind: _beside(ctx, doc, path) for kind, path in gallery.items() if path}
            lines += ["", "[![every variant × "
                          f"seed]({gallery_links['png']})]({gallery_links.get('html', gallery_links['png'])})"]
        if len(ranking) > 1:
            lines += ["", "### Variants", ""] + _table(ranking, ranked)

        lines += ["", "### Verdict", ""]
        if success:
            lines.append(f"- **Success**: grain reduced. {OPTIMAL} {_params_text(best_params, short=True)}")
            if lead := next_lead(grain, ranking, lint, failures, colour):
                lines.append(f"- {LEAD} {lead}")
        else:
            state = "incomplete" if incomplete else "not established" if success is None else "not a success"
            lines.append(f"- **Result**: {state}. {LEAD} {lead or 'none identified: a person must look at the images'}")
        lines += ["", f"<!-- ralph:params {json.dumps(best_params, sort_keys=True, default=str)} -->"]
        data = {
            "success": success,
            "next_lead": lead,
            "best_params": best_params,
            "comparison_link": link,
            "gallery_links": gallery_links,
            "incomplete": incomplete,
            "cost_usd": round(sum(costs.values()), 6) if costs else None,
            "seconds": round(seconds, 3),
            "measured": bool(grain),
        }
        return "\n".join(lines) + "\n", data

    # -- checks ---------------------------------------------------------------------------

    def _section_text(self, ctx: Context, result: Result) -> tuple[str | None, str]:
        record = (result.data or {}).get("session_doc")
        if not record:
            if (result.data or {}).get("nothing_ran"):
                return None, "nothing ran before this task, so no session was written"
            return None, "no section was appended"
        doc = ctx.path(record["path"])
        if not doc.is_file():
            return None, f"{record['path']} does not exist"
        content = doc.read_bytes()
        if _sha(content[: record["offset"]]) != record["before_sha256"]:
            return None, f"{record['path']}: the {record['offset']} bytes before the section changed"
        section = content[record["offset"] : record["offset"] + record["size"]]
        if _sha(section) != record["section_sha256"] or record["marker"].encode() not in section:
            return None, f"{record['path']}: the appended section is not there as written"
        return section.decode("utf-8"), record["path"]

    @criterion(r"session doc|doc(ument)? de session|session (document|notes)")
    def updated(self, ctx: Context, result: Result, text: str) -> Evidence:
        section, where = self._section_text(ctx, result)
        if section is None:
            return Evidence(False, where)
        record = result.data["session_doc"]
        return Evidence(True, f"section appended to {where} at byte {record['offset']} ({record['size']} bytes); "
                              "earlier content unchanged")

    @criterion(r"avant.?/?.?apres|before.?/?.?after")
    def comparison(self, ctx: Context, result: Result, text: str) -> Evidence:
        section, where = self._section_text(ctx, result)
        if section is None:
            return Evidence(False, where)
        link = result.data.get("comparison_link")
        if not link:
            return Evidence(None, "no comparison picture was made (no previous image and a single variant)")
        if f"]({link})" not in section:
            return Evidence(False, f"the picture link {link} is not in the section")
        target = (ctx.path(where).parent / unquote(link)).resolve()
        if not target.is_file():
            return Evidence(False, f"the linked picture {ctx.display_path(target)} does not exist")
        return Evidence(True, f"{where} links {link} ({target.stat().st_size} bytes)")

    @criterion(r"parametres optimaux|optimal param|best param")
    def optimal(self, ctx: Context, result: Result, text: str) -> Evidence:
        section, where = self._section_text(ctx, result)
        if section is None:
            return Evidence(False, where)
        success, params = result.data.get("success"), result.data.get("best_params") or {}
        if success:
            line = next((text for text in section.splitlines() if OPTIMAL in text), "")
            missing = [k for k in params if not _is_prose(params[k]) and f"`{k}={_fmt(params[k])}`" not in line]
            if not line or missing:
                return Evidence(False, "optimal parameters not written in full (missing "
                                       f"{', '.join(missing) or 'the line'})")
            return Evidence(True, f"success; optimal parameters noted: {_params_text(params)}")
        if result.data.get("next_lead") and f"{LEAD} {result.data['next_lead']}" in section:
            if success is None:
                return Evidence(None, f"success not established; lead noted: {result.data['next_lead']}")
            return Evidence(True, f"no success: not applicable, next lead noted: {result.data['next_lead']}")
        return Evidence(None, "no success and no lead written: a person must decide")

    @criterion(r"documentation (a jour|up to date)|docs? (a jour|up to date)")
    def documented(self, ctx: Context, result: Result, text: str) -> Evidence:
        section, where = self._section_text(ctx, result)
        if section is None:
            return Evidence(False, where)
        if not result.data.get("measured"):
            return Evidence(None, f"{where} has a section, but no measures were there to write")
        return Evidence(True, f"{where}: section with parameters, measures and verdict")

    @criterion(r"prochaine piste|next (lead|step)")
    def lead(self, ctx: Context, result: Result, text: str) -> Evidence:
        section, where = self._section_text(ctx, result)
        if section is None:
            return Evidence(False, where)
        success, lead = result.data.get("success"), result.data.get("next_lead")
        if success:
            return Evidence(True, "success: no lead needed")
        if lead and f"{LEAD} {lead}" in section:
            if success is None:
                return Evidence(None, f"success not established; lead written in {where}: {lead}")
            return Evidence(True, f"lead written in {where}: {lead}")
        return Evidence(False if success is False else None, "no next lead could be read from the evidence")


def _colour_reading(colour: dict[str, Any]) -> str:
    return (f"mean chroma {colour.get('mean_chroma')}, skin hue {colour.get('skin_hue')}°, "
            f"skin chroma {colour.get('skin_chroma')} (no previous image)")


def _found(doc: Path, record: dict[str, Any]) -> bool:
    if not doc.is_file():
        return False
    content = doc.read_bytes()
    offset = record["offset"]
    return _sha(content[:offset]) == record["before_sha256"] and record["marker"].encode() in content[offset:]


def _num(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(ranking: list[dict[str, Any]], ranked: bool) -> list[str]:
    """The variants, best marked only when the ranking rests on measures (``ranked``)."""
    keys = _varying(ranking) or ["variant"]
    head = ["Rank", "Variant", *keys, "Grain index", "Grain ratio", "Detail", "Colours", "Face", "Verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ranking:
        params = row.get("params") or {}
        colour = (row.get("colour") or {}).get("verdict") or "–"
        cells = [
            f"{row['rank']} **best**" if row["rank"] == 1 and ranked else str(row["rank"]),
            str(row.get("variant", "")).replace("|", "\\|"),
            *[_fmt(params.get(k, row.get(k, ""))) for k in keys],
            _num(row.get("grain_index")),
            _num(row.get("ratio")),
            _num(row.get("detail_ratio")),
            colour,
            _num(row.get("face_similarity"), 3),
            str(row.get("verdict")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if ranking and ranking[0].get("against"):
        lines.append(f"\nRatios against {ranking[0]['against']}.")
    return lines
