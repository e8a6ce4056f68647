//! The reference event catalogue: the 32 events of Mishka Installer 0.0.3.
//!
//! Structured events carry typed states with exactly Mishka's fields; the placeholder
//! events carry the generic [`Payload`]. The two search events collect: each plugin
//! answers the search with its own [`SearchHit`]s or [`SearchArea`]s, as Joomla's
//! `onContentSearch` and `onContentSearchAreas` gather every plugin's results. [`catalogue`]
//! lists them all.

mod types;

use serde_json::{Map, Value};
use uuid::Uuid;

pub use types::{
    Conn, Endpoint, ErrorPayload, Ip, ModifierUser, Payload, SaveStatus, SearchArea, SearchHit,
    UserInfo,
};

use crate::collect::Collect;
use crate::event::{Event, EventInfo};

/// Section of the content events.
pub const CONTENT: &str = "content";
/// Section of the user events (including captcha and privacy).
pub const USER: &str = "user";
/// Section of the installer's own event.
pub const INSTALLER: &str = "installer";
/// Section of the router event.
pub const ROUTER: &str = "router";
/// Section of the login page event.
pub const LOGIN: &str = "login";

/// What `on_change_dependency` reports about a package.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DependencyChange {
    /// A package is being added.
    Add,
    /// An installed package is being replaced (upgrade, downgrade, reinstall).
    ForceUpdate,
}

/// The kind of route `on_router` adds.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// A live (websocket-driven) page.
    Live,
    /// `DELETE`.
    Delete,
    /// `PUT`.
    Put,
    /// Forward a path prefix to another router.
    Forward,
}

/// How a user identified themself at login.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LoginType {
    /// By email address.
    Email,
    /// By username.
    Username,
}

fn public() -> String {
    "public".to_owned()
}

crate::event! {
    /// Fires before the installer adds or force-updates a package, so that plugins holding
    /// state can prepare for the switch.
    pub struct OnChangeDependency("on_change_dependency", section = "installer", binary) {
        /// The package (application) concerned.
        pub app: String,
        /// Added or force-updated.
        pub status: DependencyChange,
    }
}

crate::event! {
    /// Fires while the host builds its router, so that plugins can add routes.
    pub struct OnRouter("on_router", section = "router", binary) {
        /// The kind of route.
        pub action: RouteAction,
        /// The route's path.
        pub path: String,
        /// The handler (Mishka: the controller or live module) that serves the route.
        pub endpoint: String,
        /// The pipeline (scope) the route is placed in; `public` by default.
        #[serde(rename = "type", default = "public")]
        pub route_type: String,
        /// Options passed to the handler.
        #[serde(default, with = "crate::wire::free_json")]
        #[schemars(with = "Vec<Value>")]
        pub plug_opts: Vec<Value>,
    }
}

crate::event! {
    /// Fires after a role was deleted.
    pub struct OnUserAfterDeleteRole("on_user_after_delete_role", section = "user", binary) {
        /// The role deleted.
        pub role_id: Uuid,
        /// The client's address.
        pub ip: Ip,
        /// Which side the action came from.
        pub endpoint: Endpoint,
        /// The request.
        pub conn: Conn,
    }
}

crate::event! {
    /// Fires after a role was created or changed.
    pub struct OnUserAfterSaveRole("on_user_after_save_role", section = "user", binary) {
        /// The role saved.
        pub role_id: Uuid,
        /// The client's address.
        pub ip: Ip,
        /// Which side the action came from.
        pub endpoint: Endpoint,
        /// The request.
        pub conn: Conn,
    }
}

crate::event! {
    /// Fires after a user logged in successfully.
    pub struct OnUserAfterLogin("on_user_after_login", section = "user", binary) {
        /// The user's fields.
        #[serde(with = "crate::wire::free_json")]
        #[schemars(with = "UserInfo")]
        pub user_info: UserInfo,
        /// The client's address.
        pub ip: Ip,
        /// Which side the action came from.
        pub endpoint: Endpoint,
        /// The request.
        pub conn: Conn,
        /// How the user identified themself.
        #[serde(rename = "type")]
        pub login_type: LoginType,
        /// Free data for plugins.
        #[serde(default, with = "crate::wire::free_json")]
        #[schemars(with = "Value")]
        pub extra: Value,
    }
}

crate::event! {
    /// Fires after a user logged out.
    pub struct OnUserAfterLogout("on_user_after_logout", section = "user", binary) {
        /// The user.
        pub user_id: Uuid,
        /// The client's address.
        pub ip: Ip,
        /// Which side the action came from.
        pub endpoint: Endpoint,
        /// The request.
        pub conn: Conn,
        /// Free data for plugins.
        #[serde(default, with = "crate::wire::free_json")]
        #[schemars(with = "Value")]
        pub extra: Value,
    }
}

crate::event! {
    /// Fires after a user was added or edited successfully.
    pub struct OnUserAfterSave("on_user_after_save", section = "user", binary) {
        /// The user's fields.
        #[serde(with = "crate::wire::free_json")]
        #[schemars(with = "UserInfo")]
        pub user_info: UserInfo,
        /// The client's address.
        pub ip: Ip,
        /// Which side the action came from.
        pub endpoint: Endpoint,
        /// Added or edited.
        pub status: SaveStatus,
        /// The request.
        pub conn: Conn,
        /// Who made the change.
        pub modifier_user: ModifierUser,
        /// Free data for plugins.
        #[serde(default, with = "crate::wire::free_json")]
        #[schemars(with = "Value")]
        pub extra: Value,
    }
}

crate::event! {
    /// Fires when adding or editing a user failed. Like every reference event it is only a
    /// notice: it does not interfere with the host's own handling of the failure.
    pub struct OnUserAfterSaveFailure("on_user_after_save_failure", section = "user", binary) {
        /// What went wrong.
        pub error: ErrorPayload,
        /// The client's address.
        pub ip: Ip,
        /// Which side the action came from.
        pub endpoint: Endpoint,
        /// Whether it was an addition or an edit.
        pub status: SaveStatus,
        /// The request.
        pub conn: Conn,
        /// Who attempted the change.
        pub modifier_user: ModifierUser,
        /// Free data for plugins.
        #[serde(default, with = "crate::wire::free_json")]
        #[schemars(with = "Value")]
        pub extra: Value,
    }
}

crate::event! {
    /// Fires when a user's access to an operation is checked.
    pub struct OnUserAuthorisation("on_user_authorisation", section = "user", binary) {
        /// The request.
        pub conn: Conn,
        /// The user.
        pub user_id: Uuid,
        /// The client's address.
        pub ip: Ip,
        /// Which side the action came from.
        pub endpoint: Endpoint,
        /// The module (area) accessed.
        pub module: String,
        /// The operation attempted.
        pub operation: String,
        /// Free data for plugins.
        #[serde(default, with = "crate::wire::free_json")]
        #[schemars(with = "Value")]
        pub extra: Value,
    }
}

crate::event! {
    /// Fires when a user was refused access to an operation.
    pub struct OnUserAuthorisationFailure("on_user_authorisation_failure", section = "user", binary) {
        /// The request.
        pub conn: Conn,
        /// The client's address.
        pub ip: Ip,
        /// Which side the action came from.
        pub endpoint: Endpoint,
        /// Why access was refused.
        pub error: ErrorPayload,
        /// The module (area) accessed.
        pub module: String,
        /// The operation attempted.
        pub operation: String,
        /// Free data for plugins.
        #[serde(default, with = "crate::wire::free_json")]
        #[schemars(with = "Value")]
        pub extra: Value,
    }
}

crate::event! {
    /// Fires while the login page is rendered, so that plugins can add to it (a captcha,
    /// a notice) or read what was typed.
    pub struct OnUserBeforeLogin("on_user_before_login", section = "login", binary) {
        /// The client's address.
        pub ip: Ip,
        /// The page's assigns (its rendering data).
        #[serde(default, with = "crate::wire::free_json")]
        #[schemars(with = "Map<String, Value>")]
        pub assigns: Map<String, Value>,
        /// A rendered fragment a plugin adds to the page.
        #[serde(default)]
        pub output: Option<String>,
        /// What the user typed.
        #[serde(default, with = "crate::wire::free_json")]
        #[schemars(with = "Map<String, Value>")]
        pub input: Map<String, Value>,
    }
}

crate::event! {
    /// Fires when a login attempt failed.
    pub struct OnUserLoginFailure("on_user_login_failure", section = "user", binary) {
        /// The request.
        pub conn: Conn,
        /// The client's address.
        pub ip: Ip,
        /// Which side the action came from.
        pub endpoint: Endpoint,
        /// Why the login failed.
        pub error: ErrorPayload,
        /// Free data for plugins.
        #[serde(default, with = "crate::wire::free_json")]
        #[schemars(with = "Value")]
        pub extra: Value,
    }
}

macro_rules! placeholders {
    ($( $(#[doc = $doc:literal])* $ty:ident($name:literal, $section:literal); )*) => {
        $(
            crate::event! {
                $(#[doc = $doc])*
                pub $ty($name, section = $section) => Payload;
            }
        )*

        /// The placeholder events' infos.
        fn placeholder_infos() -> Vec<EventInfo> {
            vec![$( <$ty as Event>::info() ),*]
        }
    };
}

placeholders! {
    /// Fires when a captcha answer is checked.
    OnCheckAnswer("on_check_answer", "user");
    /// Fires when a captcha is displayed.
    OnDisplay("on_display", "user");
    /// Fires when a captcha is initialised.
    OnInit("on_init", "user");
    /// Fires when the privacy section collects the capabilities shown to admins.
    OnPrivacyCollectAdminCapabilities("on_privacy_collect_admin_capabilities", "user");
    /// Fires after a user was deleted.
    OnUserAfterDelete("on_user_after_delete", "user");
    /// Fires before a user is saved.
    OnUserBeforeSave("on_user_before_save", "user");
    /// Fires when a user logs in, before the session is created.
    OnUserLogin("on_user_login", "user");
    /// Fires when content is prepared for display.
    OnContentPrepare("on_content_prepare", "content");
    /// Fires after a content item's title is rendered.
    OnContentAfterTitle("on_content_after_title", "content");
    /// Fires before a content item is displayed.
    OnContentBeforeDisplay("on_content_before_display", "content");
    /// Fires after a content item is displayed.
    OnContentAfterDisplay("on_content_after_display", "content");
    /// Fires before a content item is saved.
    OnContentBeforeSave("on_content_before_save", "content");
    /// Fires after a content item is saved.
    OnContentAfterSave("on_content_after_save", "content");
    /// Fires when a content form is prepared.
    OnContentPrepareForm("on_content_prepare_form", "content");
    /// Fires when a content form's data is prepared.
    OnContentPrepareData("on_content_prepare_data", "content");
    /// Fires before a content item is deleted.
    OnContentBeforeDelete("on_content_before_delete", "content");
    /// Fires after a content item is deleted.
    OnContentAfterDelete("on_content_after_delete", "content");
    /// Fires when a content item's state (published, archived…) changes.
    OnContentChangeState("on_content_change_state", "content");
}

crate::event! {
    /// Fires when content is searched: every plugin is given the search (`data.text`, and
    /// as Joomla passes them `data.phrase`, `data.ordering`, `data.areas`) and answers with
    /// what it found.
    pub OnContentSearch("on_content_search", section = "content") => Payload;
}

impl Collect for OnContentSearch {
    type Output = SearchHit;
}

crate::event! {
    /// Fires when the content search collects its searchable areas: every plugin answers
    /// with an area it can search.
    pub OnContentSearchAreas("on_content_search_areas", section = "content") => Payload;
}

impl Collect for OnContentSearchAreas {
    type Output = SearchArea;
}

/// Every reference event's info, structured ones first, in a stable order.
pub fn catalogue() -> Vec<EventInfo> {
    let mut all = vec![
        OnChangeDependency::info(),
        OnRouter::info(),
        OnUserAfterDeleteRole::info(),
        OnUserAfterSaveRole::info(),
        OnUserAfterLogin::info(),
        OnUserAfterLogout::info(),
        OnUserAfterSave::info(),
        OnUserAfterSaveFailure::info(),
        OnUserAuthorisation::info(),
        OnUserAuthorisationFailure::info(),
        OnUserBeforeLogin::info(),
        OnUserLoginFailure::info(),
    ];
    all.extend(placeholder_infos());
    all.push(OnContentSearch::collect_info());
    all.push(OnContentSearchAreas::collect_info());
    all
}

/// Calls `f` once per reference event type, so that an engine can declare them all typed.
pub fn for_each<V: Visit>(visitor: &mut V) {
    macro_rules! visit {
        ($($ty:ty),* $(,)?) => { $( visitor.visit::<$ty>(); )* };
    }
    visit!(
        OnChangeDependency,
        OnRouter,
        OnUserAfterDeleteRole,
        OnUserAfterSaveRole,
        OnUserAfterLogin,
        OnUserAfterLogout,
        OnUserAfterSave,
        OnUserAfterSaveFailure,
        OnUserAuthorisation,
        OnUserAuthorisationFailure,
        OnUserBeforeLogin,
        OnUserLoginFailure,
        OnCheckAnswer,
        OnDisplay,
        OnInit,
        OnPrivacyCollectAdminCapabilities,
        OnUserAfterDelete,
        OnUserBeforeSave,
        OnUserLogin,
        OnContentPrepare,
        OnContentAfterTitle,
        OnContentBeforeDisplay,
        OnContentAfterDisplay,
        OnContentBeforeSave,
        OnContentAfterSave,
        OnContentPrepareForm,
        OnContentPrepareData,
        OnContentBeforeDelete,
        OnContentAfterDelete,
        OnContentChangeState,
    );
    visitor.visit_collect::<OnContentSearch>();
    visitor.visit_collect::<OnContentSearchAreas>();
}

/// A generic visitor over event types, for [`for_each`].
pub trait Visit {
    /// Called once per waterfall event type.
    fn visit<E: Event>(&mut self);

    /// Called once per collecting event type; by default as [`Visit::visit`] is.
    fn visit_collect<E: Collect>(&mut self) {
        self.visit::<E>();
    }
}

// Decoding in place overwrites every field of these but a request's skipped native object.
macro_rules! decode_in_place {
    ($($ty:ident),* ; with conn: $($with_conn:ident),*) => {
        $(impl crate::wire::DecodeInPlace for $ty {})*
        $(impl crate::wire::DecodeInPlace for $with_conn {
            fn reset_skipped(&mut self) {
                self.conn.forget_native();
            }
        })*
    };
}

decode_in_place!(OnChangeDependency, OnRouter, OnUserBeforeLogin;
    with conn: OnUserAfterDeleteRole, OnUserAfterSaveRole, OnUserAfterLogin, OnUserAfterLogout,
    OnUserAfterSave, OnUserAfterSaveFailure, OnUserAuthorisation, OnUserAuthorisationFailure,
    OnUserLoginFailure);
