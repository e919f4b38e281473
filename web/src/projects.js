// Projects and their members: a new project from the page (its maker is its owner), and for
// the owners of a project (and administrators) its members — listed, added by user id (or by
// name, for administrators, who may list the users), their role changed, removed.
import { apiJSON, currentUser } from "./api.js";
import { esc } from "./format.js";

const ROLES = ["owner", "editor", "viewer"];
let hooks = { changed: async () => {} };
const open = new Set();    // the projects whose members are shown (kept when the list is drawn again)

export function initProjects(callbacks) {
  hooks = { ...hooks, ...callbacks };
  document.getElementById("project-new").addEventListener("submit", (event) => {
    event.preventDefault();
    create();
  });
  document.getElementById("projects").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-members]");
    if (button) toggleMembers(button);
  });
}

/** Whether the signed-in user may manage project `id`'s members (its owners, administrators). */
export function manages(id) {
  const user = currentUser();
  if (!user) return false;
  return user.role === "admin" || (user.projects || []).some((p) => p.id === id && p.role === "owner");
}

async function create() {
  const name = document.getElementById("pn-name");
  const status = document.getElementById("pn-status");
  status.className = "muted";
  try {
    const project = await apiJSON("/projects", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: name.value.trim(), visibility: document.getElementById("pn-visibility").value }),
    });
    name.value = "";
    status.textContent = `project #${project.id} “${project.name}” created`;
    status.dataset.project = String(project.id);
    await hooks.changed(project);
  } catch (err) {
    status.className = "error-text";
    status.textContent = `refused: ${(err.body && err.body.detail) || err.message}`;
  }
}

async function toggleMembers(button) {
  const li = button.closest("li[data-project]");
  const shown = li.querySelector(".members");
  button.setAttribute("aria-expanded", String(!shown));
  if (shown) {
    shown.remove();
    open.delete(li.dataset.project);
    return;
  }
  open.add(li.dataset.project);
  const box = document.createElement("div");
  box.className = "members";
  li.append(box);
  await renderMembers(Number(li.dataset.project), box);
}

/** The projects list was drawn again: show the members that were shown. */
export function reopenMembers() {
  for (const id of open) {
    const button = document.querySelector(`#projects li[data-project="${id}"] button[data-members]`);
    if (!button) {
      open.delete(id);
      continue;
    }
    open.delete(id);
    toggleMembers(button);
  }
}

function roleSelect(role, label) {
  return `<select aria-label="${esc(label)}">${ROLES.map((r) =>
    `<option value="${r}"${r === role ? " selected" : ""}>${r}</option>`).join("")}</select>`;
}

async function renderMembers(project, box) {
  let members = [];
  try {
    members = (await apiJSON(`/projects/${project}/members`)).members || [];
  } catch (err) {
    box.innerHTML = `<span class="error-text">${esc(err.message)}</span>`;
    return;
  }
  const edit = manages(project);
  box.innerHTML = `<ul class="list">${members.map((m) => `<li data-user="${m.user_id}">${esc(m.username)} ` +
    `<span class="muted">#${m.user_id}</span> ` + (edit
      ? `${roleSelect(m.role, `role of ${m.username}`)}<button type="button" class="member-remove">remove</button>`
      : `<span class="badge">${esc(m.role)}</span>`) + "</li>").join("")}</ul>` + (edit
    ? `<form class="member-add"><label class="field"><span class="field-name">Add a member <span class="muted">user id` +
      `${currentUser()?.role === "admin" ? " or name" : ""}</span></span><input name="user" required></label>` +
      `${roleSelect("viewer", "role of the new member")}<button type="submit">Add</button></form>` : "") +
    '<div class="member-status muted" role="status"></div>';
  if (!edit) return;
  const status = box.querySelector(".member-status");
  const act = async (fn, done, user) => {
    try {
      await fn();
      if (String(user) === String(currentUser()?.id)) {     // their own role: what they may do changed
        await hooks.changed();
        return;
      }
      await renderMembers(project, box);
      box.querySelector(".member-status").textContent = done;
    } catch (err) {
      status.className = "member-status error-text";
      status.textContent = `refused: ${(err.body && err.body.detail) || err.message}`;
    }
  };
  const put = (user, role) => apiJSON(`/projects/${project}/members/${user}`, {
    method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ role }) });
  for (const li of box.querySelectorAll("li[data-user]")) {
    const user = li.dataset.user;
    li.querySelector("select").addEventListener("change", (e) => act(() => put(user, e.target.value),
      `role of #${user} changed to ${e.target.value}`, user));
    li.querySelector(".member-remove").addEventListener("click", () => act(
      () => apiJSON(`/projects/${project}/members/${user}`, { method: "DELETE" }), `#${user} removed`, user));
  }
  box.querySelector(".member-add").addEventListener("submit", (event) => {
    event.preventDefault();
    const typed = event.target.user.value.trim();
    const role = event.target.querySelector("select").value;
    act(async () => put(await userId(typed), role), `${typed} added as ${role}`, typed);
  });
}

/** A user id from what was typed: an id, or (administrators) a user name. */
async function userId(typed) {
  if (/^\d+$/.test(typed)) return Number(typed);
  if (currentUser()?.role !== "admin") throw new Error("enter the user's id (their number)");
  const found = ((await apiJSON("/admin/users")).users || []).find((u) => u.username === typed);
  if (!found) throw new Error(`no user named ${typed}`);
  return found.id;
}
