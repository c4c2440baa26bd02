// Progressive enhancement for the settings page. Everything also works without it: the
// buttons it handles are ordinary submit buttons whose server-side path does the same.
(function () {
  "use strict";

  // "Use 3.5 GB": put the suggested budget into the service's budget field, then let the
  // table's change trigger re-check the warnings.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-fill-target]");
    if (!button) return;
    var input = document.getElementById(button.dataset.fillTarget);
    if (!input) return;
    event.preventDefault();
    input.value = button.dataset.fillValue;
    input.focus();
    input.dispatchEvent(new Event("change", { bubbles: true }));
  });

  // Answers htmx does not swap (a server error, no connection) still get a visible message.
  function showError(text) {
    var box = document.getElementById("page-error");
    if (!box) return;
    box.textContent = text;
    box.hidden = false;
  }

  // A refusal answered as plain text (the host middleware's 503 for an offline host, a 404
  // for an unknown one) is a message, not a fragment: show it instead of swapping it in.
  function plainRefusal(xhr) {
    var type = xhr.getResponseHeader("Content-Type") || "";
    return xhr.status >= 400 && type.indexOf("text/plain") === 0;
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    if (plainRefusal(xhr)) {
      event.detail.shouldSwap = false;
      event.detail.isError = false;
      showError(xhr.responseText);
    }
  });

  // The host switcher loads the chosen host's page at once (its button does without JavaScript).
  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("select[data-autosubmit]")) {
      event.target.form.submit();
    }
  });

  document.addEventListener("htmx:responseError", function (event) {
    showError("The server could not complete that request (HTTP " + event.detail.xhr.status + "). Reload the page and try again.");
  });
  document.addEventListener("htmx:sendError", function () {
    showError("The server cannot be reached. The page shows what it last received.");
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var box = document.getElementById("page-error");
    if (box && event.detail.successful && !plainRefusal(event.detail.xhr)) box.hidden = true;
  });
})();

// An edit of the table after a plan was loaded makes the plan the user's own: show Manual.
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    if (!event.target.closest || !event.target.closest(".assign-table")) return;
    var select = document.getElementById("id_strategy");
    if (select && select.value !== "manual") select.value = "manual";
  });
})();
