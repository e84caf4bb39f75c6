"""The ``README.md`` of a reviewed-findings dataset, written from its manifest."""

from __future__ import annotations

from typing import Any

__all__ = ["readme_text"]


def readme_text(manifest: dict[str, Any]) -> str:
    """The dataset's README: what it holds, its format, how to train and evaluate on it, and
    what its de-identification does and does not do."""
    counts = manifest["counts"]
    period = manifest["period"]
    pixels = manifest["pixels"]
    by_class = ", ".join(f"{name} {n}" for name, n in counts["boxes_by_class"].items() if n)
    left_out = pixels.get("images_left_out", [])
    not_read = pixels.get("images_not_read", [])
    pictures = (
        f"included, {counts['images_written']} PNGs under `images/`"
        if pixels["included"]
        else "not included (export again with `--with-pixels`, or fetch the images from the "
        "PACS by the UIDs in `decisions.jsonl`)"
    )
    lines = [
        "# Reviewed findings (RadGround review export)",
        "",
        (f"Findings of the reviews signed from {period['since']} (included) to {period['until']} "
        f"(excluded), written {manifest['created_at']}; format `{manifest['format']}` version "
        f"{manifest['format_version']}."),
        "",
        (f"- {counts['reviews']} signed reviews, {counts['findings']} reviewed findings: "
        f"{counts['accepted']} accepted, {counts['rejected']} rejected."),
        (f"- `boxes.csv`: {counts['boxes']} boxes on {counts['images']} images of "
        f"{counts['patients']} patients ({by_class or 'none'}); "
        f"{counts['accepted_outside_classes']} accepted findings of other classes are only in "
        "`decisions.jsonl`."),
        f"- Pixels: {pictures}.",
        "",
        "## Training and evaluating the default model on it",
        "",
        "```",
        "python -m engine.default_model.train --data THIS_FOLDER --out RUN/ --epochs 40",
        "python -m engine.default_model.export --weights RUN/weights.pt --out RUN/model.onnx",
        "python -m engine.default_model.evaluate --data THIS_FOLDER --model RUN/model.onnx",
        "```",
        "",
        ("Both split the images by `patient_id` (20 % of the patients for validation), so at "
        "least two patients are needed"
         + ("." if pixels["included"] else ", and `images/`: export again with `--with-pixels`.")),
        "",
        "## Files",
        "",
        ("- `boxes.csv`: one row per box of an accepted finding whose class is one of the "
        f"default model's classes ({', '.join(manifest['classes'])}), spelled so. Columns: "
        f"{', '.join(manifest['files']['boxes.csv'])}. `image` is the PNG's name under "
        "`images/`; the box is the radiologist's final box in pixels of that image (the source "
        "frame's own pixels: x = column, y = row, origin at the top-left corner), clipped to it; "
        "`patient_id` is a pseudonymous integer; `all_labels` lists the image's classes "
        "(`|`-separated); `tracking_uid` is the finding's line in `decisions.jsonl`. Images "
        "whose findings were all rejected have no row (the format has no negative images)."),
        ("- `decisions.jsonl`: one JSON object per reviewed finding, accepted, rejected or "
        "added by the radiologist, of any class: `review` (number within this export), "
        "`job_id`, `study_instance_uid`, `patient_id`, `tracking_uid`, `origin` "
        "(model / suggestion / radiologist), `decision`, `reject_reason` (wrong_place, "
        "not_present, duplicate, other), `model` (class, label and description per language, "
        "coded concept, confidence, regions) and `final` (the same as the radiologist left it, "
        "plus `training_class`), each region with its `sop_instance_uid`, "
        "`series_instance_uid`, `frame_number`, `image` (PNG name) and `box` "
        "`[x_min, y_min, x_max, y_max]` in source pixels; `edited_languages`, `box_moved`, "
        "`box_iou` (model box vs final box), `in_boxes_csv`, `decided_by`/`signed_by` "
        "(reviewer pseudonyms) and `decided_at`/`signed_at` (UTC)."),
        "- `manifest.json`: the same facts for programs.",
        "",
        "## De-identification: read before this folder leaves the site",
        "",
        ("- Pseudonymous, not anonymous: `decisions.jsonl` keeps the real Study, Series and SOP "
        "Instance UIDs so that each image can be found in the PACS again. Remove that file (or "
        "its UIDs) before sharing the dataset outside the site."),
        f"- {pixels['burned_in_text_note']}",
        f"- PNG copies: {pixels['rendering']}; metadata: {pixels['png_metadata']}.",
        ("- Patients are numbered within this export, reviewers are `reviewer-N`; reject notes "
        "(free text) are left out; edited finding sentences are kept."),
    ]
    if left_out:
        lines += ["", "## Images left out (their boxes are not in `boxes.csv`)", ""]
        lines += [f"- `{item['image']}`: {item['reason']}" for item in left_out]
    if not_read:
        lines += ["", "## Images not read (listed in `boxes.csv` with unclipped boxes)", ""]
        lines += [f"- `{item['image']}`: {item['reason']}" for item in not_read]
    return "\n".join(lines) + "\n"
