document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = new URLSearchParams({token: document.getElementById("token").value.trim()});
  const error = document.getElementById("error");
  error.textContent = "";
  try {
    const response = await fetch("/login", {method: "POST", body, credentials: "same-origin"});
    if (response.ok) { location.href = "/dashboard"; return; }
    const answer = await response.json();
    error.textContent = "Not signed in: " + (answer.reason || answer.error);
  } catch (e) {
    error.textContent = "No answer from the worker: " + e;
  }
});
